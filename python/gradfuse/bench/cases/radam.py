"""gradfuse.optim.RAdam (the check runs past step 5, where the rectification switches on)."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "radam",
        "adam",
        optimizer="RAdam",
        kwargs={"lr": 1e-3},
        description="RAdam(lr=1e-3)",
        check_configs=(
            {},
            {"weight_decay": 1e-2},
            {"weight_decay": 1e-2, "decoupled_weight_decay": True, "maximize": True},
        ),
    ),
]
