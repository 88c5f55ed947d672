"""gradfuse.optim.AdamW with each low-precision policy (issue 8): bfloat16 params plain,
with stochastic rounding, Kahan compensation, float32 master weights (bfloat16 or float32
state), float32 state; and float32 params with bfloat16 state.

Run with ``gradfuse bench --ops adamw_lowprec --dtype bfloat16,float32``: each case runs at the
param dtype its policy is for and reports "not available" at the others. Only gradfuse runs
them (torch has none of these policies on the CPU). The minimal bytes per parameter are the
policy's own: every slot read or written once in its storage dtype (P = the param's bytes):

=====================  ==========================================  ===============
case                   traffic per parameter                       bf16 / fp32 P
=====================  ==========================================  ===============
plain, stochastic      param r+w, grad r, 2 states r+w: 7P         14 B
kahan                  7P + bf16 compensation r+w (4)              18 B
master                 param w, fp32 master r+w (8), grad r,       20 B
                       2 states r+w: 6P + 8
master, fp32 state     param w, master r+w, grad r, 2 fp32 states  28 B
                       r+w: 2P + 24
fp32 state             param r+w, grad r, 2 fp32 states r+w:       22 B
                       3P + 16
bf16 state (fp32 P)    param r+w, grad r, 2 bf16 states r+w:       20 B
                       3P + 8
=====================  ==========================================  ===============
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradfuse.bench._case import OptimizerCase, Runner, Size, Unavailable


@dataclass
class LowPrecisionCase(OptimizerCase):
    """One AdamW policy, gradfuse only, at one param dtype, with its own bytes per param."""

    param_dtype: str = "bfloat16"
    bytes_per_param: Callable[[int], int] = field(default=lambda p: 7 * p)
    policy: dict[str, Any] = field(default_factory=dict)

    needs_keyword = ("master_weights", "low-precision keywords")

    def min_bytes(self, size: Size, itemsize: int) -> int:
        return self.bytes_per_param(itemsize) * size.numel

    def providers(self, compile: bool) -> tuple[str, ...]:
        return ("gradfuse",)

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        if dtype != self.param_dtype:
            raise Unavailable(f"{self.name} is for {self.param_dtype} params (--dtype)")
        return super().build(provider, size, dtype, device, copies, seed)

    def gradfuse_optimizer(self, params: list[Any], **extra: Any) -> Any:
        import torch

        policy = {k: getattr(torch, v) if k == "state_dtype" else v for k, v in self.policy.items()}
        return super().gradfuse_optimizer(params, **policy, **extra)


# Each policy's keywords, and the param dtype it is for.
POLICIES: dict[str, tuple[dict[str, Any], str]] = {
    "plain": ({}, "bfloat16"),
    "stochastic": ({"rounding": "stochastic"}, "bfloat16"),
    "kahan": ({"kahan": True}, "bfloat16"),
    "master": ({"master_weights": True}, "bfloat16"),
    "master_f32state": ({"master_weights": True, "state_dtype": "float32"}, "bfloat16"),
    "f32state": ({"state_dtype": "float32"}, "bfloat16"),
    "bf16state": ({"state_dtype": "bfloat16"}, "float32"),
}


def policy_cases(
    prefix: str,
    optimizer: str,
    bytes_key: str,
    kwargs: dict[str, Any],
    nbytes: dict[str, Callable[[int], int]],
    case: type[LowPrecisionCase] = LowPrecisionCase,
) -> list[LowPrecisionCase]:
    """One ``case`` per policy of ``nbytes`` (its bytes per param from the param's itemsize),
    named ``<prefix>_<policy>``."""
    cases = []
    for name, per_param in nbytes.items():
        policy, param_dtype = POLICIES[name]
        settings = ", ".join(f"{k}={v}" for k, v in policy.items()) or "plain"
        cases.append(
            case(
                f"{prefix}_{name}",
                bytes_key,
                optimizer=optimizer,
                kwargs=kwargs,
                description=f"{optimizer}({settings}) on {param_dtype} params",
                check_configs=(),
                param_dtype=param_dtype,
                bytes_per_param=per_param,
                policy=policy,
            )
        )
    return cases


CASES = policy_cases(
    "adamw_lp",
    "AdamW",
    "adam",
    {"lr": 1e-3, "weight_decay": 1e-2},
    {
        "plain": lambda p: 7 * p,
        "stochastic": lambda p: 7 * p,
        "kahan": lambda p: 7 * p + 4,
        "master": lambda p: 6 * p + 8,
        "master_f32state": lambda p: 2 * p + 24,
        "f32state": lambda p: 3 * p + 16,
        "bf16state": lambda p: 3 * p + 8,
    },
)
