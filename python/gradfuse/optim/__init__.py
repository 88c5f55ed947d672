"""Fused drop-ins for :mod:`torch.optim`."""

from __future__ import annotations

from gradfuse.optim.adagrad import Adagrad
from gradfuse.optim.lion import Lion
from gradfuse.optim.rmsprop import RMSprop
from gradfuse.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Lion", "RMSprop"]
