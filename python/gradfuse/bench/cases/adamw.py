"""gradfuse.optim.AdamW, and with the global-norm clipping keyword ``max_grad_norm=``
(against torch.nn.utils.clip_grad_norm_ followed by torch's AdamW step)."""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase

CASES = [
    OptimizerCase(
        "adamw",
        "adam",
        optimizer="AdamW",
        kwargs={"lr": 1e-3, "weight_decay": 1e-2},
        description="AdamW(lr=1e-3, weight_decay=1e-2)",
        check_configs=({}, {"amsgrad": True}, {"weight_decay": 0.1, "maximize": True}),
    ),
    OptimizerCase(
        "adamw_clip",
        "adam_clip",
        optimizer="AdamW",
        kwargs={"lr": 1e-3, "weight_decay": 1e-2},
        max_grad_norm=1.0,
        description="AdamW(max_grad_norm=1.0) vs clip_grad_norm_(1.0) + AdamW",
        check_configs=({},),
    ),
]
