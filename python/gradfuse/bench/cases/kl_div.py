"""gradfuse.nn.functional.kl_div with its input gradient (log-probability input)."""

from __future__ import annotations

from gradfuse.bench._case import LossCase, Size, log_probs_and_probs

CASES = [
    LossCase(
        "kl_div",
        "elementwise_loss",
        function="kl_div",
        kwargs={"reduction": "batchmean"},
        inputs=log_probs_and_probs,
        default_sizes=(Size("4096x4096", ((4096, 4096),), "16M elements"),),
        quick_sizes=(Size("512x4096", ((512, 4096),), "2M elements"),),
        two_d=True,
        check_shapes=((1, 5), (7, 33), (64, 129)),
        description="kl_div(log_probs, probs, reduction='batchmean'), 16M elements",
        check_configs=(
            {"reduction": "batchmean"},
            {"reduction": "sum"},
            {"reduction": "none"},
            {"reduction": "batchmean", "log_target": True, "_target": "log"},
        ),
    ),
]
