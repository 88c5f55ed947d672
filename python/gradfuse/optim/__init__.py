"""Fused drop-ins for :mod:`torch.optim`."""

from __future__ import annotations

from gradfuse._compile import register_ops
from gradfuse.optim._optimizer import FusedOptimizer
from gradfuse.optim._quant8 import (
    dequantize_blockwise,
    dequantize_state_dict,
    dynamic_map,
    load_bitsandbytes_state_dict,
    quantize_blockwise,
)
from gradfuse.optim.adafactor import Adafactor
from gradfuse.optim.adagrad import Adagrad
from gradfuse.optim.adam import Adam
from gradfuse.optim.adam8bit import (
    Adagrad8bit,
    Adam8bit,
    Adamax8bit,
    AdamW8bit,
    AdEMAMix8bit,
    ADOPT8bit,
    LAMB8bit,
    Lion8bit,
    Muon8bit,
    NAdam8bit,
    RAdam8bit,
    RMSprop8bit,
    SGD8bit,
)
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
    "ADOPT8bit",
    "AdEMAMix",
    "AdEMAMix8bit",
    "Adafactor",
    "Adagrad",
    "Adagrad8bit",
    "Adam",
    "Adam8bit",
    "AdamW",
    "AdamW8bit",
    "Adamax",
    "Adamax8bit",
    "FusedOptimizer",
    "LAMB8bit",
    "Lion",
    "Lion8bit",
    "Muon",
    "Muon8bit",
    "NAdam",
    "NAdam8bit",
    "RAdam",
    "RAdam8bit",
    "RMSprop",
    "RMSprop8bit",
    "SGD8bit",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "dequantize_blockwise",
    "dequantize_state_dict",
    "dynamic_map",
    "load_bitsandbytes_state_dict",
    "muon_param_groups",
    "quantize_blockwise",
]
