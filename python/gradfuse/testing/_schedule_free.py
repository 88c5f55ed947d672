"""Schedule-free AdamW and SGD (Defazio et al. 2024, "The Road Less Scheduled", Algorithm 1 in
its y/z form), as the ``schedulefree`` package (1.4.1) computes them, in plain torch ops."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gradfuse import optim
from gradfuse.testing._reference import ReferenceOptimizer, arguments_of

# The group's running sums before the first step (the reference keeps them in the group).
_BOOKKEEPING = {"k": 0, "train_mode": False, "weight_sum": 0.0, "lr_max": -1.0, "scheduled_lr": 0.0}


class _ScheduleFree(ReferenceOptimizer):
    """The shared part: group bookkeeping (``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``,
    ``train_mode``), ``z`` as a copy of the param, and the train/eval switch::

        train(): y = lerp(x, z, 1 - beta1)        eval(): x = lerp(y, z, 1 - 1 / beta1)

    Per step (group values before it): ``sched = (k + 1) / warmup_steps`` during warm-up, else
    1; ``lr = lr * sched``; ``lr_max = max(lr, lr_max)``; ``weight = (k + 1) ** r *
    lr_max ** weight_lr_power``; ``weight_sum += weight``; ``ckp1 = weight / weight_sum`` (0 when
    the sum is 0); then for each param the normalized gradient ``gn`` (:meth:`_direction`) and::

        gn = gn + weight_decay * y
        y  = lerp(y, z, ckp1) + lr * (beta1 * (1 - ckp1) - 1) * gn
        z  = z - lr * gn

    Unlike the package, gradients are not modified; ``maximize`` negates them; ``foreach`` is
    accepted (the package's foreach path computes the same ops).
    """

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The arguments of gradfuse's class (:attr:`__signature__`), without its extensions."""
        super().__init__(params, {**self._bind(params, args, kwargs), **_BOOKKEEPING})

    def _beta1(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    def _direction(
        self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor, k: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def _new_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        state["z"] = torch.clone(p.detach(), memory_format=torch.preserve_format)

    @torch.no_grad()
    def _switch(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            beta1 = self._beta1(group)
            weight = 1 - beta1 if to_train else 1 - 1 / beta1
            for p in group["params"]:
                state = self.state[p]
                if "z" in state:
                    p.lerp_(end=state["z"], weight=weight)
            group["train_mode"] = to_train

    def eval(self) -> None:
        self._switch(False)

    def train(self) -> None:
        self._switch(True)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if not self.param_groups[0]["train_mode"]:
            raise Exception("Optimizer was not in train mode when step is called.")  # noqa: TRY002
        return super().step(closure)

    def _update(self) -> None:
        for group in self.param_groups:
            k = group["k"]
            warmup = group["warmup_steps"]
            sched = (k + 1) / warmup if k < warmup else 1.0
            lr = group["lr"]
            lr = (float(lr) if isinstance(lr, torch.Tensor) else lr) * sched
            group["scheduled_lr"] = lr
            lr_max = group["lr_max"] = max(lr, group["lr_max"])
            weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
            weight_sum = group["weight_sum"] = group["weight_sum"] + weight
            ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
            beta1 = self._beta1(group)
            decay = group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "z" not in state:
                    self._new_state(p, state)
                g = -p.grad if group["maximize"] else p.grad
                gn = self._direction(group, p, g, k)
                if decay != 0:
                    gn = gn.add(p, alpha=decay)
                z = state["z"]
                p.lerp_(end=z, weight=ckp1)
                p.add_(gn, alpha=lr * (beta1 * (1 - ckp1) - 1))
                z.sub_(gn, alpha=lr)
            group["k"] = k + 1


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-free AdamW: ``gn = g / (sqrt(v / (1 - beta2 ** (k + 1))) + eps)`` with
    ``v = state["exp_avg_sq"]`` updated as ``v = beta2 * v + (1 - beta2) * g * g`` first."""

    __signature__ = arguments_of(optim.ScheduleFreeAdamW)

    def _beta1(self, group: dict[str, Any]) -> float:
        return float(group["betas"][0])

    def _new_state(self, p: torch.Tensor, state: dict[str, Any]) -> None:
        super()._new_state(p, state)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _direction(
        self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor, k: int
    ) -> torch.Tensor:
        beta2 = group["betas"][1]
        v = self.state[p]["exp_avg_sq"]
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = v.div(1 - beta2 ** (k + 1)).sqrt_().add_(group["eps"])
        return g.div(denom)


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD: ``gn = g``, and ``momentum`` in place of beta1."""

    __signature__ = arguments_of(optim.ScheduleFreeSGD)

    def _beta1(self, group: dict[str, Any]) -> float:
        return float(group["momentum"])

    def _direction(
        self, group: dict[str, Any], p: torch.Tensor, g: torch.Tensor, k: int
    ) -> torch.Tensor:
        return g
