"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76
Minutes", Algorithm 2) with apex ``FusedLAMB``'s choices, in plain torch ops."""

from __future__ import annotations

from typing import Any

import torch

from gradfuse import optim
from gradfuse.testing._reference import ReferenceOptimizer, arguments_of


class LAMB(ReferenceOptimizer):
    """The paper's LAMB step as apex's ``FusedLAMB`` computes it, one torch op at a time in the
    params' dtype (a float64 run is the reference that gradfuse's low-precision results are
    judged against)::

        norm = ||all gradients of all groups||;  clip = max_grad_norm / norm if norm >
               max_grad_norm else 1, rounded to float32 as apex's
               (max_grad_norm 0 or None: no clipping)
        g = clip * grad  (negated under maximize);  g += wd * p  (adam_w_mode=False)
        m = beta1 m + beta3 g;  v = beta2 v + (1 - beta2) g^2   (beta3 = 1 - beta1 or 1)
        u = (m / bc1) / (sqrt(v / bc2) + eps);  u += wd * p  (adam_w_mode=True)
        p -= lr * (||p|| / ||u|| if (wd != 0 or use_nvlamb) and both norms != 0 else 1) * u

    ``step`` counts per param group. Same constructor as :class:`gradfuse.optim.LAMB`;
    ``foreach`` is accepted and changes nothing (one for-loop path).

    :attr:`stored_moments` (param -> (m, v)): the moments ``u`` is computed from for that
    param instead of the updated ones. gradfuse's kernel computes ``u`` from its moments as the
    state stores them (8-bit, or rounded to bfloat16); a reference for such a state gives them
    here (:func:`gradfuse.testing.compare_8bit_steps`).
    """

    __signature__ = arguments_of(optim.LAMB, extra={"foreach": False})

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """gradfuse.optim.LAMB's arguments (:attr:`__signature__`) without its precision
        policies, and ``foreach`` (ignored)."""
        defaults = self._bind(params, args, kwargs)
        if defaults.pop("amsgrad"):
            raise RuntimeError("LAMB does not support the AMSGrad variant.")
        self.adam_w_mode = defaults.pop("adam_w_mode")
        self.use_nvlamb = defaults.pop("use_nvlamb")
        del defaults["set_grad_none"]
        super().__init__(params, defaults)
        self.stored_moments: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}

    def _update(self) -> None:
        grads_all = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        clip = 1.0
        limit = self.defaults["max_grad_norm"]
        if limit and grads_all:
            norms = torch.stack([torch.linalg.vector_norm(g.double()) for g in grads_all])
            norm = float(torch.linalg.vector_norm(norms))
            # A float32 factor, as apex's (all float32) and gradfuse's (GradScaling's float32
            # clip_coef, shared by every optimizer) are.
            clip = float(torch.tensor(limit / norm, dtype=torch.float32)) if norm > limit else 1.0
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            step = group["step"]
            beta1, beta2 = group["betas"]
            beta3 = 1.0 - beta1 if group["grad_averaging"] else 1.0
            bc1 = 1.0 - beta1**step if group["bias_correction"] else 1.0
            bc2 = 1.0 - beta2**step if group["bias_correction"] else 1.0
            wd, eps, lr = group["weight_decay"], group["eps"], group["lr"]
            trust = self.use_nvlamb or wd != 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                g = p.grad * clip
                if group["maximize"]:
                    g = -g
                if not self.adam_w_mode:
                    g = g + wd * p
                m.mul_(beta1).add_(g, alpha=beta3)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                m_u, v_u = self.stored_moments.get(p, (m, v))
                u = (m_u / bc1) / ((v_u / bc2).sqrt() + eps)
                if self.adam_w_mode:
                    u = u + wd * p
                ratio = lr
                if trust:
                    pn = float(torch.linalg.vector_norm(p))
                    un = float(torch.linalg.vector_norm(u))
                    if pn != 0.0 and un != 0.0:
                        ratio = lr * (pn / un)
                p.sub_(u * ratio)
