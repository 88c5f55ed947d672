"""gradfuse.nn.functional.cross_entropy with its logits gradient: a language-model vocabulary
(4096 x 32000) and a small classifier (65536 x 10)."""

from __future__ import annotations

from gradfuse.bench._case import LossCase, Size, class_weight, logits_and_classes

CASES = [
    LossCase(
        "cross_entropy",
        "cross_entropy",
        function="cross_entropy",
        inputs=logits_and_classes,
        default_sizes=(
            Size("4096x32000", ((4096, 32000),), "LM head: 4096 tokens, 32000-word vocabulary"),
            Size("65536x10", ((65536, 10),), "classifier: 65536 samples, 10 classes"),
        ),
        quick_sizes=(
            Size("256x32000", ((256, 32000),), "LM head: 256 tokens, 32000-word vocabulary"),
            Size("16384x10", ((16384, 10),), "classifier: 16384 samples, 10 classes"),
        ),
        two_d=True,
        check_shapes=((1, 3), (64, 10), (7, 1000)),
        description="cross_entropy(logits, classes)",
        check_configs=(
            {},
            {"label_smoothing": 0.1},
            {"ignore_index": 1},
            {"weight": class_weight, "reduction": "sum"},
            {"reduction": "none"},
            {"_target": "probs"},
        ),
    ),
]
