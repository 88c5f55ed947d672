"""The 8-bit optimizers: gradfuse's optimizers with block-wise 8-bit state
(``state_dtype=torch.uint8``), under the names bitsandbytes users look for (``Adam8bit``,
``AdamW8bit``, ``Lion8bit``, ``RMSprop8bit``, ``Adagrad8bit``) and the same for Adamax, NAdam
and RAdam, SGD (with momentum: its buffer is created from the first gradient, then 8-bit),
Muon (8-bit momentum buffers; its AdamW groups' moments 8-bit too) and LAMB (bitsandbytes'
``LAMB8bit``)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from gradfuse.optim._precision import MIN_8BIT_SIZE
from gradfuse.optim.adagrad import Adagrad
from gradfuse.optim.adam import Adam
from gradfuse.optim.adamax import Adamax
from gradfuse.optim.adamw import AdamW
from gradfuse.optim.ademamix import AdEMAMix
from gradfuse.optim.adopt import ADOPT
from gradfuse.optim.lamb import LAMB
from gradfuse.optim.lion import Lion
from gradfuse.optim.muon import Muon
from gradfuse.optim.nadam import NAdam
from gradfuse.optim.radam import RAdam
from gradfuse.optim.rmsprop import RMSprop
from gradfuse.optim.sgd import SGD

ADAM_DOC = """Adam with block-wise 8-bit state: :class:`gradfuse.optim.Adam` with
    ``state_dtype=torch.uint8`` (see :mod:`gradfuse.optim._quant8`).

    ``exp_avg`` (signed dynamic map) and ``exp_avg_sq`` (unsigned) of every param with at least
    ``min_8bit_size`` elements are uint8 codes with a float32 ``*_absmax`` per 256 elements:
    2 bytes of state per param plus 1/32 (bitsandbytes' layout; its ``Adam8bit`` checkpoints load
    with :func:`gradfuse.optim.load_bitsandbytes_state_dict`). Smaller params keep float32
    state. One fused pass per step dequantizes, updates in float32 and requantizes each block.
    Params of float32, float16 or bfloat16, on the CPU or a CUDA device (the CUDA kernel is
    compiled and tested, but has not run on a GPU yet); every other option as :class:`Adam`,
    ``weight_decay`` included: an L2 term, as torch's Adam. (bitsandbytes' ``Adam8bit`` decays
    the weights decoupled, as AdamW: a bitsandbytes ``Adam8bit`` run with weight decay
    continues as :class:`AdamW8bit`.)
    """


def set_min_8bit_size(optimizer: Any, min_8bit_size: int) -> None:
    """bitsandbytes' ``min_8bit_size``: params with fewer elements keep float32 state."""
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
        raise ValueError(
            f"{type(optimizer).__name__}: min_8bit_size must be a non-negative int, got "
            f"{min_8bit_size!r}"
        )
    optimizer._precision.min_8bit_size = min_8bit_size


def _eight_bit(base: type, name: str, doc: str | None = None) -> type:
    """``<base>8bit``: ``base`` with ``state_dtype=torch.uint8`` and ``min_8bit_size``. Its
    signature (``inspect.signature``, ``help()``) is the parent's without ``state_dtype``, with
    ``min_8bit_size`` among the keyword-only options."""

    init: Any = vars(base)["__init__"]  # every gradfuse optimizer has its torch constructor

    def __init__(self: Any, *args: Any, min_8bit_size: int = MIN_8BIT_SIZE, **kwargs: Any) -> None:
        if "state_dtype" in kwargs:
            raise TypeError(f"{name}: state_dtype is torch.uint8 (8-bit state) by definition")
        init(self, *args, state_dtype=torch.uint8, **kwargs)
        set_min_8bit_size(self, min_8bit_size)

    parent = inspect.signature(base)
    kept = [q for q in parent.parameters.values() if q.name != "state_dtype"]
    if "min_8bit_size" not in parent.parameters:  # AdEMAMix has bitsandbytes' positional one
        extra = inspect.Parameter(
            "min_8bit_size", inspect.Parameter.KEYWORD_ONLY, default=MIN_8BIT_SIZE, annotation=int
        )
        at = next((i for i, q in enumerate(kept) if q.kind is q.VAR_KEYWORD), len(kept))
        kept.insert(at, extra)
    __init__.__signature__ = parent.replace(parameters=kept)  # type: ignore[attr-defined]
    doc = doc or (
        f"{base.__name__} with block-wise 8-bit state: :class:`gradfuse.optim.{base.__name__}` "
        f"with ``state_dtype=torch.uint8`` (see :mod:`gradfuse.optim._quant8`); the same "
        f"arguments plus ``min_8bit_size`` (default 4096: smaller params keep float32 state)."
    )
    cls = type(name, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})
    cls.__signature__ = parent.replace(  # type: ignore[attr-defined]
        parameters=kept[1:] if kept and kept[0].name == "self" else kept
    )
    return cls


Adam8bit = _eight_bit(Adam, "Adam8bit", ADAM_DOC)
AdamW8bit = _eight_bit(
    AdamW,
    "AdamW8bit",
    ADAM_DOC.replace("Adam with", "AdamW with").replace(":class:`Adam`", ":class:`AdamW`"),
)
Adamax8bit = _eight_bit(Adamax, "Adamax8bit")
NAdam8bit = _eight_bit(NAdam, "NAdam8bit")
RAdam8bit = _eight_bit(RAdam, "RAdam8bit")
Adagrad8bit = _eight_bit(Adagrad, "Adagrad8bit")
RMSprop8bit = _eight_bit(RMSprop, "RMSprop8bit")
Lion8bit = _eight_bit(Lion, "Lion8bit")
SGD8bit = _eight_bit(SGD, "SGD8bit")
ADOPT8bit = _eight_bit(ADOPT, "ADOPT8bit")
AdEMAMix8bit = _eight_bit(AdEMAMix, "AdEMAMix8bit")
Muon8bit = _eight_bit(Muon, "Muon8bit")
LAMB8bit = _eight_bit(
    LAMB,
    "LAMB8bit",
    """LAMB with block-wise 8-bit state: :class:`gradfuse.optim.LAMB` with
    ``state_dtype=torch.uint8`` (see :mod:`gradfuse.optim._quant8`).

    ``exp_avg`` (signed dynamic map) and ``exp_avg_sq`` (unsigned) of every param with at least
    ``min_8bit_size`` elements (default 4096) are uint8 codes with a float32 ``*_absmax`` per 256
    elements; smaller params keep float32 state. Each of the kernel's two passes dequantizes the
    moments tile by tile; the first updates and requantizes them (new absmax, nearest codes) and
    takes the trust ratio's norms from the moments as stored. Params of float32, float16 or
    bfloat16, on the CPU or a CUDA device; every other argument, default and option as
    :class:`LAMB` (apex ``FusedLAMB``'s).

    bitsandbytes' ``LAMB8bit`` shares the names ``lr``, ``bias_correction``, ``betas``, ``eps``,
    ``weight_decay``, ``amsgrad`` (refused), ``adam_w_mode`` and ``min_8bit_size``; its defaults
    ``eps=1e-8`` and ``weight_decay=0`` are not taken (with apex's semantics ``weight_decay=0``
    turns the trust ratio off); its ``args`` and ``max_unorm`` have no counterpart.
    """,
)
