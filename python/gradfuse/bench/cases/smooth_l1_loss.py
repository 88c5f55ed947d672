"""gradfuse.nn.functional.smooth_l1_loss with its input gradient."""

from __future__ import annotations

from gradfuse.bench._case import LossCase

CASES = [
    LossCase(
        "smooth_l1_loss",
        "elementwise_loss",
        function="smooth_l1_loss",
        description="smooth_l1_loss(input, target), 16M elements",
        check_configs=(
            {},
            {"beta": 0.5, "reduction": "sum"},
            {"beta": 0.0},
            {"reduction": "none"},
        ),
    ),
]
