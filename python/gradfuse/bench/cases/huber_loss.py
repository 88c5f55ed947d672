"""gradfuse.nn.functional.huber_loss with its input gradient."""

from __future__ import annotations

from gradfuse.bench._case import LossCase

CASES = [
    LossCase(
        "huber_loss",
        "elementwise_loss",
        function="huber_loss",
        description="huber_loss(input, target), 16M elements",
        check_configs=({}, {"delta": 0.5, "reduction": "sum"}, {"reduction": "none"}),
    ),
]
