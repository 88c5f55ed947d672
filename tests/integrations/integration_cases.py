"""The optimizers every integration test runs, in one list.

Each entry is (name, constructor kwargs); the torch class is ``torch.optim.<name>`` and the
gradfuse class ``gradfuse.optim.<name>``. An entry whose gradfuse class does not exist yet on
this branch is skipped with that reason, so adding an optimizer to gradfuse.optim makes every
integration test (DDP, ZeRO, FSDP2, torch.compile, schedulers, checkpoints) cover it with no
further change.
"""

from __future__ import annotations

from typing import Any

import torch

import gradfuse.optim

# kwargs are chosen so that every option that changes the update is on (momentum, Nesterov,
# weight decay, amsgrad, ...), with learning rates that move a small model visibly in 5 steps.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("AdamW", {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 1e-2}),
    ("Adam", {"lr": 1e-2, "weight_decay": 1e-3, "amsgrad": True}),
    ("Adamax", {"lr": 1e-2, "weight_decay": 1e-3}),
    ("NAdam", {"lr": 1e-2, "weight_decay": 1e-3}),
    ("RAdam", {"lr": 1e-2, "weight_decay": 1e-3}),
    ("Adagrad", {"lr": 1e-2, "lr_decay": 1e-3, "weight_decay": 1e-3}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.5, "centered": True, "weight_decay": 1e-3}),
]

# The distributed runs (one process launch for all) take the two the issue names; so do the
# torch.compile tests by default (several seconds of compilation per case: the others are
# marked slow).
DISTRIBUTED = ("SGD", "AdamW")
COMPILE = ("SGD", "AdamW")


def gradfuse_class(name: str) -> type[torch.optim.Optimizer] | None:
    cls = getattr(gradfuse.optim, name, None)
    return cls if isinstance(cls, type) else None


def available(names: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The cases (optionally only ``names``) whose gradfuse class exists."""
    return [
        (n, kw)
        for n, kw in CASES
        if (names is None or n in names) and gradfuse_class(n) is not None
    ]


def params(names: tuple[str, ...] | None = None, fast: tuple[str, ...] | None = None) -> list[Any]:
    """pytest parameters (name, kwargs); with ``fast``, the other cases are marked ``slow`` (for
    tests that cost seconds per case). Every case must name an existing gradfuse optimizer: a
    missing one is a failure at collection, not a skip."""
    import pytest  # here: the distributed worker processes import this module without pytest

    out = []
    for n, kw in CASES:
        if names is not None and n not in names:
            continue
        assert gradfuse_class(n) is not None, f"gradfuse.optim.{n} does not exist"
        marks: list[Any] = []
        if fast is not None and n not in fast:
            marks.append(pytest.mark.slow)
        out.append(pytest.param(n, kw, id=n, marks=marks))
    return out


def make(kind: str, name: str, params_: Any, kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """``kind`` "gradfuse" or "torch": the optimizer ``name`` over ``params_``."""
    cls = gradfuse_class(name) if kind == "gradfuse" else getattr(torch.optim, name)
    assert cls is not None, name
    return cls(params_, **kwargs)  # type: ignore[no-any-return]
