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

import functools
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


@dataclass(frozen=True)
class Traffic:
    """An update's minimal memory traffic per parameter, in element accesses: ``param_reads``
    reads of the param, ``grad_reads`` of the gradient, ``state_accesses`` reads and writes of
    state elements; the param is written once."""

    param_reads: int
    grad_reads: int
    state_accesses: int

    def bytes_per_param(self, policy: dict[str, Any], p: int) -> int:
        """The bytes per parameter under ``policy`` (P = ``p``, the param's itemsize): a float32
        master copy is read instead of the param and written beside it, a bfloat16 Kahan
        compensation is read and written once, the state is in ``state_dtype`` (else P)."""
        state = _ITEMSIZE.get(policy.get("state_dtype", ""), p)
        param = self.param_reads * p + p
        if policy.get("master_weights"):
            param = (self.param_reads + 1) * 4 + p
        if policy.get("kahan"):
            param += 2 * 2
        return param + self.grad_reads * p + self.state_accesses * state


_ITEMSIZE = {"float32": 4, "bfloat16": 2}


def policy_cases(
    optimizer: str,
    bytes_key: str,
    kwargs: dict[str, Any],
    traffic: Traffic,
    policies: tuple[str, ...],
    case: type[LowPrecisionCase] = LowPrecisionCase,
) -> list[LowPrecisionCase]:
    """One ``case`` per name of ``policies`` (keys of :data:`POLICIES`), named
    ``<optimizer in lower case>_lp_<policy>``, its bytes per param from ``traffic`` under that
    policy."""
    cases = []
    for name in policies:
        policy, param_dtype = POLICIES[name]
        settings = ", ".join(f"{k}={v}" for k, v in policy.items()) or "plain"
        cases.append(
            case(
                f"{optimizer.lower()}_lp_{name}",
                bytes_key,
                optimizer=optimizer,
                kwargs=kwargs,
                description=f"{optimizer}({settings}) on {param_dtype} params",
                check_configs=(),
                param_dtype=param_dtype,
                bytes_per_param=functools.partial(traffic.bytes_per_param, policy),
                policy=policy,
            )
        )
    return cases


# Param r+w, grad r, exp_avg and exp_avg_sq r+w.
CASES = policy_cases(
    "AdamW",
    "adam",
    {"lr": 1e-3, "weight_decay": 1e-2},
    Traffic(param_reads=1, grad_reads=1, state_accesses=4),
    tuple(POLICIES),
)
