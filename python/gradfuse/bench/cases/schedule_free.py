"""gradfuse.optim.ScheduleFreeAdamW / ScheduleFreeSGD against the ``schedulefree`` package.

The torch providers run the package's ``AdamWScheduleFree`` / ``SGDScheduleFree`` (Meta's
implementation of Defazio et al. 2024): ``torch-forloop`` its ``foreach=False`` path,
``torch-foreach`` its default ``foreach=True`` path. Where the package is not installed they
run :mod:`gradfuse.testing`'s reference (the same algorithm in plain torch ops; the tests check
it against the package). Every optimizer is put in train mode first, as the package requires.
The package divides ``p.grad`` in place at each step; its timed steps therefore see changing
(but finite, O(1)) gradients, which costs it nothing measurable.

``schedule_free_adamw_heavyball``: the same step against heavyball's ``SFAdamW`` (a
torch.compile-based implementation, ``torch-foreach`` row), with its own defaults where they
differ (its ``betas=(0.9, 0.99)``, ``eps=1e-6``: the kwargs below are passed to both).
heavyball drops ``p.grad`` after each step, so its timed step first puts the gradients back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradfuse.bench._case import NO_TORCH_FUSED, OptimizerCase, Unavailable, with_grads

_PACKAGE_CLASS = {"ScheduleFreeAdamW": "AdamWScheduleFree", "ScheduleFreeSGD": "SGDScheduleFree"}


@dataclass
class ScheduleFreeCase(OptimizerCase):
    """An optimizer case whose optimizers are switched to train mode when built."""

    heavyball: bool = False  # the torch-foreach provider is heavyball.SFAdamW

    def gradfuse_optimizer(self, params: list[Any], **extra: Any) -> Any:
        opt = super().gradfuse_optimizer(params, **extra)
        opt.train()
        return opt

    def torch_optimizer(
        self, params: list[Any], *, foreach: bool, fused: bool, **extra: Any
    ) -> Any:
        if fused:
            raise Unavailable(NO_TORCH_FUSED)
        kw = {**self.kwargs, **extra}
        if self.heavyball:
            if not foreach:
                raise Unavailable("heavyball: its multi-tensor (compiled) step is the row")
            try:
                import heavyball  # type: ignore[import-untyped]
            except ImportError:
                raise Unavailable("heavyball is not installed") from None
            opt = heavyball.SFAdamW(params, **kw)
        else:
            try:
                import schedulefree  # type: ignore[import-untyped]

                cls = getattr(schedulefree, _PACKAGE_CLASS[self.optimizer])
            except ImportError:
                from gradfuse.testing import reference_class

                cls = reference_class(self.optimizer)
            opt = cls(params, foreach=foreach, **kw)
        opt.train()
        return opt

    def torch_step(self, opt: Any, params: list[Any], foreach: bool) -> Any:
        if not self.heavyball:
            return super().torch_step(opt, params, foreach)
        return with_grads(opt, params, [p.grad for p in params])


CASES = [
    ScheduleFreeCase(
        "schedule_free_adamw",
        "schedule_free_adamw",
        optimizer="ScheduleFreeAdamW",
        kwargs={"lr": 2.5e-3, "weight_decay": 1e-2, "warmup_steps": 10},
        description="ScheduleFreeAdamW(lr=2.5e-3, weight_decay=1e-2, warmup_steps=10); torch: "
        "schedulefree.AdamWScheduleFree",
        check_configs=(
            {},
            {"weight_decay": 0.0, "r": 0.5, "weight_lr_power": 0.0},
            {"betas": (0.8, 0.95), "eps": 1e-6, "warmup_steps": 0, "r": 1.0},
        ),
    ),
    ScheduleFreeCase(
        "schedule_free_sgd",
        "schedule_free_sgd",
        optimizer="ScheduleFreeSGD",
        kwargs={"lr": 0.1, "weight_decay": 1e-4, "warmup_steps": 10},
        description="ScheduleFreeSGD(lr=0.1, weight_decay=1e-4, warmup_steps=10); torch: "
        "schedulefree.SGDScheduleFree",
        check_configs=(
            {},
            {"weight_decay": 0.0, "momentum": 0.5, "r": 1.0},
            {"warmup_steps": 0, "weight_lr_power": 1.0, "r": 0.5},
        ),
    ),
    ScheduleFreeCase(
        "schedule_free_adamw_heavyball",
        "schedule_free_adamw",
        optimizer="ScheduleFreeAdamW",
        kwargs={"lr": 2.5e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
        description="ScheduleFreeAdamW(lr=2.5e-3, weight_decay=1e-2); torch-foreach: "
        "heavyball.SFAdamW (torch.compile)",
        check_configs=(),
        heavyball=True,
    ),
]
