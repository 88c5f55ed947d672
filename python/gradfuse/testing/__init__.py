"""Reference implementations that gradfuse is checked against (needs torch).

gradfuse's tests, ``gradfuse check`` and ``gradfuse bench`` compare each fused optimizer with
one reference, from here:

- where torch has the optimizer, torch's class (its for-loop path, ``foreach=False``);
- where it does not, the published algorithm written here in plain torch ops, one op at a time
  in the params' dtype (:class:`Lion`).

Either runs in any dtype; on float64 params it is the float64 reference that low-precision
results are judged against (``gradfuse._tolerances``)::

    from gradfuse.testing import reference_optimizer

    ref = reference_optimizer("Lion", params64, lr=1e-3, weight_decay=0.1)
    ref.step()

Adding an algorithm torch lacks (schedule-free, AdEMAMix, ADOPT, Adafactor, LAMB, Muon, 8-bit
state, ...): write it as a :class:`torch.optim.Optimizer` in a private module of this package,
from the paper, with state named as gradfuse's optimizer names it and the same constructor
keywords (``__signature__ = arguments_of(gradfuse.optim.<Name>)``: the defaults are checked
against the peer package's signature in the tests, not restated here); accept ``foreach``
(``gradfuse bench`` times a ``foreach=True`` path where there is one); add it to
:data:`REFERENCES`. The tests, ``gradfuse check`` and ``gradfuse bench`` then
find it by name, and this stays the only copy.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from gradfuse.testing._adopt import ADOPT, AdEMAMix
from gradfuse.testing._lamb import LAMB
from gradfuse.testing._lion import Lion
from gradfuse.testing._muon import Muon
from gradfuse.testing._quant8 import compare_8bit_steps, judge_8bit_steps, nearest_codes
from gradfuse.testing._schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD

#: Optimizers torch has no class for, by the name of the gradfuse class they are a reference for.
REFERENCES: dict[str, type[torch.optim.Optimizer]] = {
    "Lion": Lion,
    "LAMB": LAMB,
    "ADOPT": ADOPT,
    "AdEMAMix": AdEMAMix,
    "ScheduleFreeAdamW": ScheduleFreeAdamW,
    "ScheduleFreeSGD": ScheduleFreeSGD,
}


def reference_class(name: str) -> type[torch.optim.Optimizer]:
    """The reference for ``gradfuse.optim.<name>``: :data:`REFERENCES` first, then
    ``torch.optim.<name>``. Raises KeyError naming both places when neither has it."""
    if name in REFERENCES:
        return REFERENCES[name]
    cls = getattr(torch.optim, name, None)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        return cls
    raise KeyError(
        f"no reference optimizer {name!r}: neither gradfuse.testing.REFERENCES "
        f"({sorted(REFERENCES)}) nor torch.optim has it"
    )


def has_torch_class(name: str) -> bool:
    """Whether the reference for ``name`` is torch's own class (so its messages, state names
    and checkpoints are torch's), rather than one written here."""
    return name not in REFERENCES and hasattr(torch.optim, name)


def reference_optimizer(
    name: str, params: Any, *, foreach: bool = False, **kwargs: Any
) -> torch.optim.Optimizer:
    """The reference optimizer for ``gradfuse.optim.<name>`` over ``params``, built with the
    same keyword arguments as gradfuse's class; torch's for-loop path unless ``foreach``."""
    cls: Any = reference_class(name)
    if "foreach" in inspect.signature(cls).parameters:
        kwargs["foreach"] = foreach
    elif foreach:  # torch.optim.Muon has one path
        raise ValueError(f"reference_optimizer: {cls.__qualname__} has no foreach path")
    opt: torch.optim.Optimizer = cls(params, **kwargs)
    return opt


__all__ = [
    "ADOPT",
    "LAMB",
    "REFERENCES",
    "AdEMAMix",
    "Lion",
    "Muon",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "compare_8bit_steps",
    "has_torch_class",
    "judge_8bit_steps",
    "nearest_codes",
    "reference_class",
    "reference_optimizer",
]
