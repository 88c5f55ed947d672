"""Fused drop-ins for :mod:`torch.optim`."""

from __future__ import annotations

from gradfuse._compile import register_ops
from gradfuse.optim._optimizer import FusedOptimizer
from gradfuse.optim.adafactor import Adafactor
from gradfuse.optim.adagrad import Adagrad
from gradfuse.optim.adam import Adam
from gradfuse.optim.adamax import Adamax
from gradfuse.optim.adamw import AdamW
from gradfuse.optim.ademamix import AdEMAMix
from gradfuse.optim.adopt import ADOPT
from gradfuse.optim.lamb import LAMB
from gradfuse.optim.lion import Lion
from gradfuse.optim.muon import Muon, muon_param_groups
from gradfuse.optim.nadam import NAdam
from gradfuse.optim.radam import RAdam
from gradfuse.optim.rmsprop import RMSprop
from gradfuse.optim.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from gradfuse.optim.sgd import SGD

register_ops()  # torch.compile support: define the custom op before anything is traced

__all__ = [
    "ADOPT",
    "LAMB",
    "SGD",
    "AdEMAMix",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "FusedOptimizer",
    "Lion",
    "Muon",
    "NAdam",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "muon_param_groups",
]
