"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2)."""

from __future__ import annotations

from typing import Any

import torch

from gradfuse import optim
from gradfuse.testing._reference import ReferenceOptimizer, arguments_of


class Lion(ReferenceOptimizer):
    """Algorithm 2 of the paper in plain torch ops, one op at a time in the params' dtype::

        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay) - lr * sign(c)     (sign(0) = 0)
        m = beta2 * m + (1 - beta2) * g

    with ``m = state["exp_avg"]`` (zeros before the first step) and ``g = -grad`` under
    ``maximize``. The paper writes the decay inside the update, ``p - lr * (sign(c) + wd * p)``:
    the same. ``foreach=True`` does the same ops with torch's ``_foreach`` functions (the
    faster baseline ``gradfuse bench`` times); ``lr`` may be a 1-element tensor.
    """

    __signature__ = arguments_of(
        optim.Lion, omit=("differentiable", "fused"), defaults={"foreach": False}
    )

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """gradfuse.optim.Lion's arguments (:attr:`__signature__`) without its extensions,
        ``differentiable`` and ``fused``; ``foreach`` picks the ``_foreach`` path."""
        super().__init__(params, self._bind(params, args, kwargs))

    def _update(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [-p.grad if group["maximize"] else p.grad for p in params]
            bufs = []
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["exp_avg"])
            lr = group["lr"]
            lr = float(lr) if isinstance(lr, torch.Tensor) else lr
            wd = group["weight_decay"]
            beta1, beta2 = group["betas"]
            if group["foreach"] and params:
                torch._foreach_mul_(params, 1 - lr * wd)
                upd = torch._foreach_mul(bufs, beta1)
                torch._foreach_add_(upd, grads, alpha=1 - beta1)
                torch._foreach_sign_(upd)
                torch._foreach_add_(params, upd, alpha=-lr)
                torch._foreach_mul_(bufs, beta2)
                torch._foreach_add_(bufs, grads, alpha=1 - beta2)
                continue
            for p, g, m in zip(params, grads, bufs, strict=True):
                p.mul_(1 - lr * wd)
                upd = m.mul(beta1).add_(g, alpha=1 - beta1).sign_()
                p.add_(upd, alpha=-lr)
                m.mul_(beta2).add_(g, alpha=1 - beta2)
