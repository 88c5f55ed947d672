"""The gradfuse.optim drop-ins against the torch class of the same name, one row each.

Each row: case name, its row of ``MIN_ACCESSES`` (bytes per element), the optimizer class, the
benchmarked keyword arguments, and the option sets ``gradfuse check`` compares with torch (empty:
another row of the same optimizer checks every combination). Lion (no torch class) and the
low-precision AdamW cases have modules of their own.
"""

from __future__ import annotations

from gradfuse.bench._case import OptimizerCase, OptimizerRow, optimizer_cases

_ROWS: tuple[OptimizerRow, ...] = (
    # SGD: plain, and with momentum + weight decay (the foundation issue's bar).
    ("sgd", "sgd", "SGD", {"lr": 1e-3}, (
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2},
        {"momentum": 0.5, "maximize": True},
    )),
    ("sgd_momentum_wd", "sgd_momentum", "SGD",
     {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}, ()),
    ("adam", "adam", "Adam", {"lr": 1e-3}, (
        {},
        {"weight_decay": 1e-2},
        {"amsgrad": True},
        {"maximize": True, "betas": (0.8, 0.9), "eps": 1e-6},
    )),
    ("adam_amsgrad", "adam_amsgrad", "Adam", {"lr": 1e-3, "amsgrad": True}, ()),
    ("adamw", "adam", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2},
     ({}, {"amsgrad": True}, {"weight_decay": 0.1, "maximize": True})),
    ("adamax", "adamax", "Adamax", {"lr": 2e-3},
     ({}, {"weight_decay": 1e-2}, {"maximize": True})),
    ("nadam", "adam", "NAdam", {"lr": 2e-3}, (
        {},
        {"weight_decay": 1e-2},
        {"weight_decay": 1e-2, "decoupled_weight_decay": True},
        {"momentum_decay": 8e-3, "maximize": True},
    )),
    # RAdam: the check runs past step 5, where the rectification switches on.
    ("radam", "adam", "RAdam", {"lr": 1e-3}, (
        {},
        {"weight_decay": 1e-2},
        {"weight_decay": 1e-2, "decoupled_weight_decay": True, "maximize": True},
    )),
    ("adagrad", "adagrad", "Adagrad", {"lr": 1e-2}, (
        {},
        {"lr_decay": 1e-2, "weight_decay": 1e-2},
        {"initial_accumulator_value": 0.1, "maximize": True},
    )),
    # RMSprop: plain, and centered with momentum (its heaviest form).
    ("rmsprop", "rmsprop", "RMSprop", {"lr": 1e-3}, (
        {},
        {"momentum": 0.9},
        {"centered": True, "momentum": 0.9, "weight_decay": 1e-2},
        {"alpha": 0.9, "maximize": True},
    )),
    ("rmsprop_centered_momentum", "rmsprop_centered_momentum", "RMSprop",
     {"lr": 1e-3, "centered": True, "momentum": 0.9}, ()),
)  # fmt: skip


# AdamW with the global-norm clipping keyword, against torch.nn.utils.clip_grad_norm_ followed by
# torch's AdamW step.
_CLIPPED = OptimizerCase(
    "adamw_clip",
    "adam_clip",
    optimizer="AdamW",
    kwargs={"lr": 1e-3, "weight_decay": 1e-2},
    max_grad_norm=1.0,
    description="AdamW(max_grad_norm=1.0) vs clip_grad_norm_(1.0) + AdamW",
    check_configs=({},),
)

CASES = [*optimizer_cases(_ROWS), _CLIPPED]
