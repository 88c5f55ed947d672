"""gradfuse.clip_grad_norm_ against torch.nn.utils.clip_grad_norm_ (for-loop and foreach)."""

from __future__ import annotations

from gradfuse.bench._case import FunctionCase

CASES = [
    FunctionCase(
        "clip_grad_norm",
        "clip_grad_norm",
        symbol="gradfuse.clip_grad_norm_",
        kind="function",
        kwargs={"max_norm": 1.0},
        description="clip_grad_norm_(params, max_norm=1.0)",
        check_configs=({}, {"norm_type": float("inf")}, {"max_norm": 1e6}),
    ),
]
