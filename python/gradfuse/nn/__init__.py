"""Drop-ins for torch.nn's loss modules (same constructor arguments), with fused loss + gradient.

The functional forms are in :mod:`gradfuse.nn.functional`.
"""

from __future__ import annotations

from gradfuse.nn import functional
from gradfuse.nn._elementwise import (
    BCEWithLogitsLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    SmoothL1Loss,
)

__all__ = [
    "BCEWithLogitsLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "functional",
]
