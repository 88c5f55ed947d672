"""gradfuse.optim.Adam, and with amsgrad."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "adam",
        "adam",
        optimizer="Adam",
        kwargs={"lr": 1e-3},
        description="Adam(lr=1e-3)",
        check_configs=(
            {},
            {"weight_decay": 1e-2},
            {"amsgrad": True},
            {"maximize": True, "betas": (0.8, 0.9), "eps": 1e-6},
        ),
    ),
    OptimizerCase(
        "adam_amsgrad",
        "adam_amsgrad",
        optimizer="Adam",
        kwargs={"lr": 1e-3, "amsgrad": True},
        description="Adam(lr=1e-3, amsgrad=True)",
        check_configs=(),
    ),
]
