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
from gradfuse.nn._softmax import CrossEntropyLoss, NLLLoss

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
    "functional",
]
