"""gradfuse.optim.Lion against a torch implementation of the published algorithm.

torch has no Lion; the torch providers run :class:`TorchLion` below (Chen et al. 2023,
"Symbolic Discovery of Optimization Algorithms", Algorithm 2), a for-loop over tensors or the
same update with torch's ``_foreach`` ops. It is also the reference ``gradfuse check`` uses.

    update = sign(beta1 * m + (1 - beta1) * g)
    p      = p * (1 - lr * weight_decay) - lr * update
    m      = beta2 * m + (1 - beta2) * g
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradfuse.bench._case import OptimizerCase


def _torch_lion(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    import torch

    class TorchLion(torch.optim.Optimizer):
        def __init__(
            self,
            params: Any,
            lr: float = 1e-4,
            betas: tuple[float, float] = (0.9, 0.99),
            weight_decay: float = 0.0,
            *,
            maximize: bool = False,
            foreach: bool = False,
        ) -> None:
            defaults = {
                "lr": lr,
                "betas": betas,
                "weight_decay": weight_decay,
                "maximize": maximize,
                "foreach": foreach,
            }
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [-p.grad if group["maximize"] else p.grad for p in params]
                bufs = []
                for p in params:
                    state = self.state[p]
                    if "exp_avg" not in state:
                        state["exp_avg"] = torch.zeros_like(p)
                    bufs.append(state["exp_avg"])
                lr, wd = group["lr"], group["weight_decay"]
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

    return TorchLion(params, foreach=foreach, **kwargs)


CASES = [
    OptimizerCase(
        "lion",
        "lion",
        optimizer="Lion",
        kwargs={"lr": 1e-4, "weight_decay": 1e-2},
        torch_factory=_torch_lion,
        description="Lion(lr=1e-4, weight_decay=1e-2); torch: the published algorithm in torch ops",
        check_configs=({}, {"weight_decay": 0.0}, {"betas": (0.95, 0.98), "maximize": True}),
    ),
]
