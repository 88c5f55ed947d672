"""gradfuse.optim.RMSprop: plain, and centered with momentum (its heaviest form)."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "rmsprop",
        "rmsprop",
        optimizer="RMSprop",
        kwargs={"lr": 1e-3},
        description="RMSprop(lr=1e-3)",
        check_configs=(
            {},
            {"momentum": 0.9},
            {"centered": True, "momentum": 0.9, "weight_decay": 1e-2},
            {"alpha": 0.9, "maximize": True},
        ),
    ),
    OptimizerCase(
        "rmsprop_centered_momentum",
        "rmsprop_centered_momentum",
        optimizer="RMSprop",
        kwargs={"lr": 1e-3, "centered": True, "momentum": 0.9},
        description="RMSprop(lr=1e-3, centered=True, momentum=0.9)",
        check_configs=(),
    ),
]
