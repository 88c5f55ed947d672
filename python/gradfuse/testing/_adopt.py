"""ADOPT (Taniguchi et al. 2024) and AdEMAMix (Pagliardini et al. 2024) in plain torch ops, one
op at a time in the params' dtype: the references gradfuse's ``ADOPT`` and ``AdEMAMix`` are
checked against in float64 (the reference packages, pytorch_optimizer and bitsandbytes, are
compared with in the tests too; bitsandbytes computes in float32 whatever the params' dtype, so
a float64 reference has to be written here)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from gradfuse import optim
from gradfuse.testing._reference import ReferenceOptimizer, arguments_of


def _step_of(state: dict[str, Any]) -> int:
    state["step"] = state.get("step", 0) + 1
    return int(state["step"])


class ADOPT(ReferenceOptimizer):
    """ADOPT as the authors' code and ``pytorch_optimizer.ADOPT`` write it, with a step count
    per param (``state["step"]``)::

        g = -grad if maximize else grad;  g += wd * p (L2)  or  p *= 1 - wd * (1 or lr)
        step 1:  v += g * g
        step t:  n = clamp(g / max(sqrt(v), eps), -c, c), c = clip_lambda(t)
                 m = lerp(m, n, 1 - beta1);  p -= lr * m;  v = beta2 * v + (1 - beta2) * g * g
    """

    __signature__ = arguments_of(optim.ADOPT)

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """gradfuse.optim.ADOPT's arguments (:attr:`__signature__`) without its extensions."""
        defaults = self._bind(params, args, kwargs)
        self.clip_lambda: Callable[[int], float] | None = defaults.pop("clip_lambda")
        super().__init__(params, defaults)

    def _update(self) -> None:
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad.clone()
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                step = _step_of(state)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                if wd != 0.0:
                    if group["weight_decouple"]:
                        p.mul_(1.0 - wd * (1.0 if group["fixed_decay"] else lr))
                    elif wd > 0.0:
                        g.add_(p, alpha=wd)
                if step == 1:
                    v.addcmul_(g, g)
                    continue
                n = g / v.sqrt().clamp_(min=eps)
                if self.clip_lambda is not None:
                    c = self.clip_lambda(step)
                    n.clamp_(-c, c)
                m.lerp_(n, 1.0 - beta1)
                p.add_(m, alpha=-lr)
                v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)


class AdEMAMix(ReferenceOptimizer):
    """AdEMAMix as bitsandbytes' ``AdEMAMix`` computes it (its schedules per param, its order
    of operations), with gradfuse's state names::

        m1 = beta1 * m1 + (1 - beta1) * g;  m2 = beta3_t * m2 + (1 - beta3_t) * g
        nu = beta2 * nu + (1 - beta2) * g * g;  p *= 1 - lr * wd (wd > 0)
        p -= lr * (m1 / (1 - beta1**t) + alpha_t * m2) / (sqrt(nu) / sqrt(1 - beta2**t) + eps)
    """

    # bitsandbytes' 8-bit and paging options are not the reference's (a float64 rule).
    __signature__ = arguments_of(
        optim.AdEMAMix, omit=("optim_bits", "min_8bit_size", "is_paged"), extra={"foreach": None}
    )

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """gradfuse.optim.AdEMAMix's arguments (:attr:`__signature__`) without its extensions
        and bitsandbytes' storage options, and ``foreach`` (accepted, ignored)."""
        super().__init__(params, self._bind(params, args, kwargs))

    def _update(self) -> None:
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2, beta3_final = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = -p.grad if group["maximize"] else p.grad
                state = self.state[p]
                if "exp_avg" not in state:
                    for key in ("exp_avg", "exp_avg_slow", "exp_avg_sq"):
                        state[key] = torch.zeros_like(p)
                step = _step_of(state)
                alpha, beta3 = group["alpha"], beta3_final
                if group["t_alpha"]:
                    alpha = min(step * alpha / group["t_alpha"], alpha)
                if group["t_beta3"]:
                    ln1, ln3 = math.log(beta1), math.log(beta3)
                    s = step / group["t_beta3"]
                    beta3 = min(math.exp((ln1 * ln3) / (((1 - s) * ln3) + (s * ln1))), beta3)
                m1, m2, nu = state["exp_avg"], state["exp_avg_slow"], state["exp_avg_sq"]
                m1.mul_(beta1).add_(g, alpha=1.0 - beta1)
                m2.mul_(beta3).add_(g, alpha=1.0 - beta3)
                nu.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
                if wd > 0.0:
                    p.mul_(1.0 - lr * wd)
                c1 = 1.0 - beta1**step
                c2 = math.sqrt(1.0 - beta2**step)
                p.add_((m1 / c1 + alpha * m2) / (nu.sqrt() / c2 + eps), alpha=-lr)
