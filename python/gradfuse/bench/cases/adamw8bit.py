"""gradfuse.optim.AdamW8bit (block-wise 8-bit state, issue 16) against torch's fused float32
AdamW and the 8-bit AdamW of bitsandbytes (``bitsandbytes.optim.AdamW8bit``) and torchao
(``torchao.optim.AdamW8bit``), each where installed, in the same run.

Minimal traffic per float32 parameter: param read+write (8 B), grad read (4 B), two uint8 codes
read+written (4 B) and their float32 absmax, one per 256 elements each, read+written (1/16 B):
16 B (the stream ceiling percentage of the gradfuse row is at this count; torch's fused float32
AdamW moves 28 B per parameter). State memory: 2 + 1/32 bytes per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradfuse.bench._case import (
    OptimizerCase,
    Runner,
    Size,
    Unavailable,
    _leaves,
    _optimizer_inputs,
)

_KWARGS = {"lr": 1e-3, "weight_decay": 1e-2}
_ADAMW8BIT = {"bitsandbytes": "bitsandbytes.optim:AdamW8bit", "torchao": "torchao.optim:AdamW8bit"}


@dataclass
class EightBitCase(OptimizerCase):
    """An optimizer with 8-bit state; providers: gradfuse, ``float32_provider`` (the float32
    reference's step through the case's torch side) and the 8-bit classes of ``references``
    (provider: ``"module:Class"``, called with ``reference_kwargs``), each where installed.

    Minimal traffic per float32 parameter: ``param_accesses`` reads/writes of the param, one
    grad read, ``code_accesses`` of the uint8 codes and as many of their float32 absmax (one
    per 256 elements). AdamW: 2 param, 4 code accesses (16 B + 16/256)."""

    float32_provider: str = "torch-fused"
    references: dict[str, str] = field(default_factory=lambda: dict(_ADAMW8BIT))
    reference_kwargs: dict[str, Any] = field(default_factory=lambda: dict(_KWARGS))
    param_accesses: int = 2
    code_accesses: int = 4

    needs_keyword = ("state_dtype", "state_dtype= keyword (8-bit state)")

    def min_bytes(self, size: Size, itemsize: int) -> int:
        per = (self.param_accesses + 1) * itemsize + self.code_accesses
        return per * size.numel + (size.numel * 4 * self.code_accesses) // 256

    def providers(self, compile: bool) -> tuple[str, ...]:
        return ("gradfuse", self.float32_provider, *self.references)

    def gradfuse_optimizer(self, params: list[Any], **extra: Any) -> Any:
        import torch

        # gradfuse.optim.<Name>8bit is this (with min_8bit_size=4096); `gradfuse check` covers
        # the float32-state optimizer it shares with its plain case.
        return super().gradfuse_optimizer(params, state_dtype=torch.uint8, **extra)

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        if provider in ("gradfuse", self.float32_provider):
            return super().build(provider, size, dtype, device, copies, seed)
        calls = []
        for c in range(copies):
            params0, grads0 = _optimizer_inputs(size.shapes, dtype, device, seed + c)
            params = _leaves(params0, grads0, clone_grads=False)
            calls.append(self._reference(provider, params).step)
        return Runner(calls)

    def _reference(self, provider: str, params: list[Any]) -> Any:
        import importlib

        module, name = self.references[provider].split(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError as exc:
            raise Unavailable(f"{provider} is not installed ({exc})") from None
        return cls(params, **self.reference_kwargs)


CASES = [
    EightBitCase(
        "adamw8bit",
        "adam",
        optimizer="AdamW",
        kwargs=_KWARGS,
        description="AdamW(lr=1e-3, weight_decay=1e-2, state_dtype=torch.uint8), i.e. AdamW8bit; "
        "torch-fused: float32 AdamW(fused=True)",
        # The float32-state AdamW is checked by its plain case; here every 8-bit optimizer, a
        # step at a time from the same dequantized state as its float32 reference (LAMB's u
        # from the moments as stored, as its kernel computes it).
        check_configs=(),
        check_8bit=(
            ("AdamW", _KWARGS),
            ("AdamW", {"amsgrad": True}),
            ("Adam", {"maximize": True, "weight_decay": 0.1}),
            ("Adamax", {"lr": 2e-3}),
            ("NAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1}),
            ("RAdam", {}),
            ("Adagrad", {"lr": 1e-2, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
            ("RMSprop", {"centered": True, "momentum": 0.9}),
            ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
            ("SGD", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.5}),
            ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
            ("ADOPT", {}),
            ("AdEMAMix", {"t_alpha": 20, "t_beta3": 20}),
            # No clipping: apex's clip factor comes from a norm of all gradients, reduced by
            # gradfuse and by the reference in other orders: ulps apart in every element's
            # moments, a difference test_lamb.py judges, not this per-element rule.
            ("LAMB", {"weight_decay": 0.01, "max_grad_norm": 0.0}),
        ),
    ),
]
