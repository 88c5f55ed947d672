"""Drop-in loss modules for :mod:`torch.nn`: same constructors and results, fused gradients."""

from __future__ import annotations

from gradfuse.nn import functional
from gradfuse.nn._softmax import CrossEntropyLoss, NLLLoss

__all__ = ["CrossEntropyLoss", "NLLLoss", "functional"]
