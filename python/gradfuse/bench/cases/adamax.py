"""gradfuse.optim.Adamax."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "adamax",
        "adamax",
        optimizer="Adamax",
        kwargs={"lr": 2e-3},
        description="Adamax(lr=2e-3)",
        check_configs=({}, {"weight_decay": 1e-2}, {"maximize": True}),
    ),
]
