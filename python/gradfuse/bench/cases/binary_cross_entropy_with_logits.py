"""gradfuse.nn.functional.binary_cross_entropy_with_logits with its input gradient."""

from __future__ import annotations

from typing import Any

from gradfuse.bench._case import LossCase, logits_and_probs


def _pos_weight(shape: tuple[int, ...], gen: Any) -> Any:
    import torch

    return torch.rand(shape[-1:], generator=gen) * 2 + 0.1


def _weight(shape: tuple[int, ...], gen: Any) -> Any:
    import torch

    return torch.rand(shape, generator=gen) + 0.5


CASES = [
    LossCase(
        "binary_cross_entropy_with_logits",
        "elementwise_loss",
        function="binary_cross_entropy_with_logits",
        inputs=logits_and_probs,
        description="binary_cross_entropy_with_logits(input, target), 16M elements",
        check_configs=(
            {},
            {"pos_weight": _pos_weight},
            {"weight": _weight, "reduction": "sum"},
            {"reduction": "none"},
        ),
    ),
]
