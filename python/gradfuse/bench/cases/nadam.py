"""gradfuse.optim.NAdam."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "nadam",
        "adam",
        optimizer="NAdam",
        kwargs={"lr": 2e-3},
        description="NAdam(lr=2e-3)",
        check_configs=(
            {},
            {"weight_decay": 1e-2},
            {"weight_decay": 1e-2, "decoupled_weight_decay": True},
            {"momentum_decay": 8e-3, "maximize": True},
        ),
    ),
]
