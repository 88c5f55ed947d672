"""gradfuse.nn.functional's class-index losses with their input gradient, one row each:
cross_entropy (logits) and nll_loss (log-probabilities), on a language-model vocabulary
(4096 x 32000) and a small classifier (65536 x 10)."""

from __future__ import annotations

from typing import Any

from gradfuse.bench._case import (
    InputMaker,
    LossCase,
    Size,
    class_weight,
    log_probs_and_classes,
    logits_and_classes,
)

# function, its input (how it is made, what the description calls it), the option sets
# ``gradfuse check`` compares with torch.
_ROWS: tuple[tuple[str, InputMaker, str, tuple[dict[str, Any], ...]], ...] = (
    ("cross_entropy", logits_and_classes, "logits", (
        {},
        {"label_smoothing": 0.1},
        {"ignore_index": 1},
        {"weight": class_weight, "reduction": "sum"},
        {"reduction": "none"},
        {"_target": "probs"},
    )),
    ("nll_loss", log_probs_and_classes, "log_probs", (
        {},
        {"ignore_index": 1},
        {"weight": class_weight, "reduction": "sum"},
        {"reduction": "none"},
    )),
)  # fmt: skip


def _sizes(*shapes: tuple[int, int]) -> tuple[Size, ...]:
    return tuple(
        Size(
            f"{n}x{c}",
            ((n, c),),
            f"{'LM head' if c > 1000 else 'classifier'}: {n} rows, {c} classes",
        )
        for n, c in shapes
    )


CASES = [
    LossCase(
        function,
        function,
        function=function,
        inputs=inputs,
        default_sizes=_sizes((4096, 32000), (65536, 10)),
        quick_sizes=_sizes((256, 32000), (16384, 10)),
        two_d=True,
        check_shapes=((1, 3), (64, 10), (7, 1000)),
        description=f"{function}({input_name}, classes)",
        check_configs=checks,
    )
    for function, inputs, input_name, checks in _ROWS
]
