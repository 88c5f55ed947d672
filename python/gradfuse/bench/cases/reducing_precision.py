"""LAMB with 8-bit state and Adafactor with each precision policy: the reducing updates'
counterparts of ``adamw8bit`` and ``adamw_lowprec`` (they need the ``state_dtype`` and
low-precision keywords, as those do).

``lamb8bit``: gradfuse's LAMB8bit against pytorch-optimizer's Lamb (float32 state, the lamb
case's options) and bitsandbytes' ``LAMB8bit``. ``adafactor_lp_*``: gradfuse only (torch has
none of these policies), each at the param dtype its policy is for, on the adafactor case's
matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradfuse.bench.cases.adafactor_lamb import (
    _LAMB_AS_PYOPT,
    _MatrixCase,
    _pytorch_optimizer_lamb,
)
from gradfuse.bench.cases.adamw8bit import EightBitCase
from gradfuse.bench.cases.adamw_lowprec import LowPrecisionCase, Traffic, policy_cases


@dataclass
class _MatrixPolicyCase(_MatrixCase, LowPrecisionCase):
    """An Adafactor precision policy (gradfuse only, its param dtype), on matrices."""


# Adafactor's precision policies on factored params (row/col state negligible), P the param's
# bytes: pass A reads the param (its master copy) and the grad, pass C reads both and writes
# the param (and the master copy, or the Kahan compensation). Where the eps1 clamp may be
# active (bfloat16 params with torch's eps1, 2^-7) pass B reads the grad again: P more.
_ADAFACTOR_POLICIES = policy_cases(
    "Adafactor",
    "adafactor",
    {"lr": 1e-2, "weight_decay": 1e-2},
    Traffic(param_reads=2, grad_reads=2, state_accesses=0),
    ("plain", "stochastic", "kahan", "master", "f32state", "bf16state"),
    _MatrixPolicyCase,
)

CASES = [
    *_ADAFACTOR_POLICIES,
    EightBitCase(
        "lamb8bit",
        "lamb",
        optimizer="LAMB",
        kwargs=dict(_LAMB_AS_PYOPT),
        torch_factory=_pytorch_optimizer_lamb,
        description=(
            "LAMB(as the lamb case, state_dtype=torch.uint8), i.e. LAMB8bit; torch-forloop: "
            "pytorch_optimizer.Lamb (float32 state); bitsandbytes: LAMB8bit(lr=1e-3, "
            "weight_decay=1e-2, bias_correction=False)"
        ),
        check_configs=(),
        float32_provider="torch-forloop",
        references={"bitsandbytes": "bitsandbytes.optim:LAMB8bit"},
        reference_kwargs={"lr": 1e-3, "weight_decay": 1e-2, "bias_correction": False},
        # pass 1: param r, grad r, both codes r+w; pass 2: param r+w, both codes r.
        param_accesses=3,
        code_accesses=6,
    ),
]
