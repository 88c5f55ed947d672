"""gradfuse.optim.Adafactor against torch.optim.Adafactor, and gradfuse.optim.LAMB (apex
FusedLAMB semantics) against pytorch-optimizer's Lamb with the options that compute the same
update (tests/optim/test_lamb.py says how apex's options map) and against
gradfuse.testing.LAMB (the paper's algorithm with apex's choices, plain torch ops).

Adafactor factors params of rank >= 2, so its 16M row is one 4096 x 4096 matrix, not the flat
tensor of the other optimizers (a flat one takes the unfactored path: 8 accesses per element).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradfuse.bench._case import HOST, MODEL, MODEL_SMALL, OptimizerCase, Size

MATRIX_16M = Size("16M", ((4096, 4096),), "one 4096 x 4096 matrix (2^24 elements), factored")
MATRIX_2M = Size("2M", ((1024, 2048),), "one 1024 x 2048 matrix (2^21 elements), factored")

# The LAMB options that pytorch-optimizer's Lamb computes too: no bias correction (its
# adam_debias=True), weight decay added to the update (apex adam_w_mode, pytorch-optimizer
# weight_decouple=False), the trust ratio on every tensor, no clipping.
_LAMB_AS_PYOPT = {
    "lr": 1e-3,
    "weight_decay": 1e-2,
    "bias_correction": False,
    "use_nvlamb": True,
    "max_grad_norm": 0.0,
}


def _pytorch_optimizer_lamb(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    from pytorch_optimizer import Lamb

    if kwargs != _LAMB_AS_PYOPT:
        raise ValueError(f"no pytorch-optimizer Lamb options for {kwargs}")
    return Lamb(
        params,
        lr=1e-3,
        weight_decay=1e-2,
        weight_decouple=False,
        adam_debias=True,
        foreach=foreach,
    )


def _reference_lamb(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    from gradfuse.testing import reference_optimizer

    return reference_optimizer("LAMB", params, foreach=foreach, **kwargs)


def _torch_adafactor(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    import torch

    # torch divides by the size of an empty param (ZeroDivisionError); gradfuse leaves it
    # alone, so the reference steps the others.
    return torch.optim.Adafactor([p for p in params if p.numel()], foreach=foreach, **kwargs)


@dataclass
class _MatrixCase(OptimizerCase):
    """An optimizer case whose 16M/2M sizes are matrices (Adafactor factors them)."""

    def sizes(self, quick: bool) -> list[Size]:
        return [MATRIX_2M, MODEL_SMALL, HOST] if quick else [MATRIX_16M, MODEL, HOST]

    def parse_size(self, token: str) -> Size | None:
        named = {s.name: s for s in (MATRIX_16M, MATRIX_2M, MODEL, MODEL_SMALL, HOST)}
        return named.get(token) or super().parse_size(token)


CASES = [
    _MatrixCase(
        "adafactor",
        "adafactor",
        optimizer="Adafactor",
        kwargs={"lr": 1e-2, "weight_decay": 1e-2},
        torch_factory=_torch_adafactor,
        description="Adafactor(lr=1e-2, weight_decay=1e-2) vs torch.optim.Adafactor",
        check_configs=(
            {},
            {"weight_decay": 0.1, "maximize": True},
            {"eps": (1e-3, 1e-2), "d": 2.0, "beta2_decay": -0.5, "lr": 0.3},
        ),
    ),
    OptimizerCase(
        "lamb",
        "lamb",
        optimizer="LAMB",
        kwargs=dict(_LAMB_AS_PYOPT),
        torch_factory=_pytorch_optimizer_lamb,
        description=(
            "LAMB(bias_correction=False, use_nvlamb=True, max_grad_norm=0, weight_decay=1e-2) "
            "vs pytorch_optimizer.Lamb(weight_decouple=False, adam_debias=True, weight_decay=1e-2)"
        ),
        check_configs=(),
    ),
    OptimizerCase(
        "lamb_paper",
        "lamb",
        optimizer="LAMB",
        kwargs={"lr": 1e-3},
        torch_factory=_reference_lamb,
        description="LAMB (apex defaults) vs gradfuse.testing.LAMB (the paper, torch ops)",
        check_configs=(
            {},
            {"adam_w_mode": False, "weight_decay": 0.1},
            {"bias_correction": False, "grad_averaging": False, "maximize": True},
            {"weight_decay": 0.0, "use_nvlamb": True, "max_grad_norm": 0.0},
        ),
    ),
]
