"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"), with
the auxiliary AdamW of the usual recipe, from the published algorithm."""

from __future__ import annotations

import math
from typing import Any

import torch

from gradfuse import optim
from gradfuse.testing._reference import ReferenceOptimizer, arguments_of


def newton_schulz(
    g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of the post, in ``g``'s dtype, one matrix at a time::

    X = G / max(||G||_F, eps)     (transposed first when G is tall)
    repeat steps times:  A = X X^T;  B = b A + c A A;  X = a X + B X
    """
    a, b, c = coefficients
    x = g
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    out: torch.Tensor = x.T if tall else x
    return out


class Muon(ReferenceOptimizer):
    """Muon one param at a time in plain torch ops, in the params' dtype (or ``ns_dtype`` for
    the Newton-Schulz iteration); a param of rank > 2 as the matrix ``(shape[0], rest)``; groups
    with ``use_muon=False`` take AdamW (Loshchilov & Hutter, decoupled weight decay) with the
    group's ``betas`` and ``eps``. Per Muon param, with ``buf = state["momentum_buffer"]``::

        buf = momentum * buf + (1 - momentum) * g
        u = (1 - momentum) * g + momentum * buf   if nesterov else buf
        p = p * (1 - lr * weight_decay) - adjusted_lr * NS(u)

    (torch writes the two EMAs as ``lerp``: the same). ``foreach`` is accepted and ignored.
    """

    # ns_dtype=None: the iteration in the params' dtype (float64 for a float64 reference).
    __signature__ = arguments_of(optim.Muon, defaults={"ns_dtype": None}, extra={"foreach": False})

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """gradfuse.optim.Muon's arguments (:attr:`__signature__`) without its extensions, the
        Newton-Schulz iteration in the params' dtype by default, and ``foreach`` (ignored)."""
        defaults = self._bind(params, args, kwargs)
        self._adamw_defaults = {
            "betas": defaults.pop("adamw_betas"),
            "eps": defaults.pop("adamw_eps"),
        }
        del defaults["foreach"]
        super().__init__(params, {**defaults, "use_muon": True})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not param_group.get("use_muon", True):
            for key, value in self._adamw_defaults.items():
                param_group.setdefault(key, value)
        super().add_param_group(param_group)

    def _update(self) -> None:
        for group in self.param_groups:
            lr = float(group["lr"])
            wd = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["use_muon"]:
                    self._muon(p, group, lr, wd)
                else:
                    self._adamw(p, group, lr, wd)

    def _muon(self, p: torch.Tensor, group: dict[str, Any], lr: float, wd: float) -> None:
        g = p.grad
        assert g is not None
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        buf.mul_(mu).add_(g, alpha=1 - mu)
        u = g * (1 - mu) + buf * mu if group["nesterov"] else buf
        rows = p.shape[0]
        cols = math.prod(p.shape[1:])
        mat = u.reshape(rows, cols)
        dtype = group["ns_dtype"] or p.dtype
        ortho = newton_schulz(
            mat.to(dtype), group["ns_coefficients"], group["ns_steps"], group["eps"]
        )
        fn = group["adjust_lr_fn"]
        if fn is None or fn == "original":
            adjusted = lr * math.sqrt(max(1, rows / cols))
        else:
            adjusted = lr * 0.2 * math.sqrt(max(rows, cols))
        p.mul_(1 - lr * wd)
        p.add_(ortho.reshape(p.shape).to(p.dtype), alpha=-adjusted)

    def _adamw(self, p: torch.Tensor, group: dict[str, Any], lr: float, wd: float) -> None:
        g = p.grad
        assert g is not None
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        t = float(state["step"])
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        p.mul_(1 - lr * wd)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
