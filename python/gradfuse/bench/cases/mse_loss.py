"""gradfuse.nn.functional.mse_loss with its input gradient."""

from __future__ import annotations

from gradfuse.bench._case import LossCase

CASES = [
    LossCase(
        "mse_loss",
        "elementwise_loss",
        function="mse_loss",
        description="mse_loss(input, target), 16M elements",
        check_configs=({}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
]
