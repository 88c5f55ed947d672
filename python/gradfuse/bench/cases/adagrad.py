"""gradfuse.optim.Adagrad."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "adagrad",
        "adagrad",
        optimizer="Adagrad",
        kwargs={"lr": 1e-2},
        description="Adagrad(lr=1e-2)",
        check_configs=(
            {},
            {"lr_decay": 1e-2, "weight_decay": 1e-2},
            {"initial_accumulator_value": 0.1, "maximize": True},
        ),
    ),
]
