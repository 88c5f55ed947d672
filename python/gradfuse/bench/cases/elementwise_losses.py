"""The elementwise losses of gradfuse.nn.functional with their input gradient, one row each:
the function and the option sets ``gradfuse check`` compares with torch (16M elements timed).
BCE-with-logits and kl_div, whose inputs differ, have modules of their own."""

from __future__ import annotations

from typing import Any

from gradfuse.bench._case import LossCase

_ROWS: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = (
    ("mse_loss", ({}, {"reduction": "sum"}, {"reduction": "none"})),
    ("l1_loss", ({}, {"reduction": "sum"}, {"reduction": "none"})),
    ("huber_loss", ({}, {"delta": 0.5, "reduction": "sum"}, {"reduction": "none"})),
    ("smooth_l1_loss", ({}, {"beta": 0.5, "reduction": "sum"}, {"beta": 0.0}, {"reduction": "none"})),
)  # fmt: skip

CASES = [
    LossCase(
        function,
        "elementwise_loss",
        function=function,
        description=f"{function}(input, target), 16M elements",
        check_configs=checks,
    )
    for function, checks in _ROWS
]
