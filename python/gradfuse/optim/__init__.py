"""Fused drop-ins for :mod:`torch.optim`."""

from __future__ import annotations

from gradfuse.optim.sgd import SGD

__all__ = ["SGD"]
