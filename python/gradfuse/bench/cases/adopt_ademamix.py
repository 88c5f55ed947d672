"""gradfuse.optim.ADOPT and AdEMAMix against their reference packages (issue 18).

- ADOPT: ``pytorch_optimizer.ADOPT`` (4.1.0): torch-forloop is its per-param path
  (``foreach=False``), torch-foreach its ``_foreach`` path. ``gradfuse check`` compares with the
  per-param path in every dtype.
- AdEMAMix: torch-forloop is bitsandbytes' ``AdEMAMix`` (0.50.2, 32-bit state; on the CPU a
  chain of torch ops per tensor) for float32 params; torch-foreach is heavyball's ``AdEMAMix``
  (torch.compile'd foreach; the same EMAs, but heavyball parameterizes them differently: a
  speed comparison only). bitsandbytes computes in float32 whatever the params' dtype, so for
  other dtypes the for-loop reference is :class:`gradfuse.testing.AdEMAMix` (bitsandbytes'
  operations in the params' dtype), which is what ``gradfuse check`` compares float64 and
  16-bit runs with.
"""

from __future__ import annotations

import importlib
from typing import Any

from gradfuse.bench._case import Unavailable, optimizer_cases


def _pytorch_optimizer_adopt(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    try:
        from pytorch_optimizer import ADOPT
    except ImportError:
        raise Unavailable("pytorch_optimizer is not installed") from None
    return ADOPT(params, foreach=foreach, **kwargs)


def _ademamix_reference(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    import torch

    if foreach:
        try:
            heavyball = importlib.import_module("heavyball")
        except ImportError:
            raise Unavailable("heavyball is not installed") from None
        kw = dict(kwargs)
        betas = kw.pop("betas", (0.9, 0.999, 0.9999))
        return heavyball.AdEMAMix(
            params,
            lr=kw.pop("lr", 1e-3),
            betas=betas,
            alpha=kw.pop("alpha", 5.0),
            weight_decay=kw.pop("weight_decay", 1e-2),
            beta3_warmup=kw.pop("t_beta3", None),
            alpha_warmup=kw.pop("t_alpha", None),
            **kw,
        )
    params = list(params)
    if params and all(p.dtype == torch.float32 for p in params):
        try:
            bnb_optim = importlib.import_module("bitsandbytes.optim")
        except ImportError:
            raise Unavailable("bitsandbytes is not installed") from None
        return bnb_optim.AdEMAMix(params, **kwargs)
    from gradfuse.testing import reference_optimizer

    return reference_optimizer("AdEMAMix", params, **kwargs)


CASES = [
    *optimizer_cases(
        [("adopt", "adopt", "ADOPT", {"lr": 1e-3}, (
            {},
            {"weight_decay": 1e-2},
            {"weight_decay": 1e-2, "weight_decouple": True},
            {"weight_decay": 1e-2, "weight_decouple": True, "fixed_decay": True},
            {"clip_lambda": None, "maximize": True, "betas": (0.8, 0.99)},
        ))],
        _pytorch_optimizer_adopt,
        "pytorch_optimizer.ADOPT (per-param / foreach path)",
    ),
    *optimizer_cases(
        [("ademamix", "ademamix", "AdEMAMix", {"lr": 1e-3, "t_alpha": 1000, "t_beta3": 1000}, (
            {},
            {"weight_decay": 0.0, "alpha": 2.0},
            {"t_alpha": 4, "t_beta3": 6},
            {"betas": (0.8, 0.99, 0.999), "eps": 1e-6, "t_beta3": 3},
        ))],
        _ademamix_reference,
        "bitsandbytes AdEMAMix (32-bit) for-loop, heavyball AdEMAMix (compiled) foreach",
    ),
]  # fmt: skip
