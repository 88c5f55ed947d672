"""gradfuse.optim.SGD: plain, and with momentum + weight decay (the foundation issue's bar)."""

from __future__ import annotations

from typing import Any

from gradfuse.bench._case import OptimizerCase

_CHECKS: tuple[dict[str, Any], ...] = (
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
    {"momentum": 0.5, "maximize": True},
)

CASES = [
    OptimizerCase(
        "sgd",
        "sgd",
        optimizer="SGD",
        kwargs={"lr": 1e-3},
        description="SGD(lr=1e-3)",
        check_configs=_CHECKS,
    ),
    OptimizerCase(
        "sgd_momentum_wd",
        "sgd_momentum",
        optimizer="SGD",
        kwargs={"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4},
        description="SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)",
        check_configs=(),  # the "sgd" case checks every combination
    ),
]
