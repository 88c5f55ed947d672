"""gradfuse.nn.functional.nll_loss with its input gradient (log-probability input)."""

from __future__ import annotations

from gradfuse.bench._case import LossCase, Size, class_weight, log_probs_and_classes

CASES = [
    LossCase(
        "nll_loss",
        "nll_loss",
        function="nll_loss",
        inputs=log_probs_and_classes,
        default_sizes=(
            Size("4096x32000", ((4096, 32000),), "4096 rows, 32000 classes"),
            Size("65536x10", ((65536, 10),), "65536 rows, 10 classes"),
        ),
        quick_sizes=(
            Size("256x32000", ((256, 32000),), "256 rows, 32000 classes"),
            Size("16384x10", ((16384, 10),), "16384 rows, 10 classes"),
        ),
        two_d=True,
        check_shapes=((1, 3), (64, 10), (7, 1000)),
        description="nll_loss(log_probs, classes)",
        check_configs=(
            {},
            {"ignore_index": 1},
            {"weight": class_weight, "reduction": "sum"},
            {"reduction": "none"},
        ),
    ),
]
