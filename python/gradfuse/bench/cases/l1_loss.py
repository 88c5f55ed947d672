"""gradfuse.nn.functional.l1_loss with its input gradient."""

from __future__ import annotations

from gradfuse.bench._case import LossCase

CASES = [
    LossCase(
        "l1_loss",
        "elementwise_loss",
        function="l1_loss",
        description="l1_loss(input, target), 16M elements",
        check_configs=({}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
]
