"""gradfuse.optim.AdamW8bit (block-wise 8-bit state, issue 16) against torch's fused float32
AdamW and the 8-bit AdamW of bitsandbytes (``bitsandbytes.optim.AdamW8bit``) and torchao
(``torchao.optim.AdamW8bit``), each where installed, in the same run.

Minimal traffic per float32 parameter: param read+write (8 B), grad read (4 B), two uint8 codes
read+written (4 B) and their float32 absmax, one per 256 elements each, read+written (1/16 B):
16 B (the stream ceiling percentage of the gradfuse row is at this count; torch's fused float32
AdamW moves 28 B per parameter). State memory: 2 + 1/32 bytes per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class EightBitCase(OptimizerCase):
    """AdamW with 8-bit state; providers: gradfuse, torch-fused (float32 state), bitsandbytes,
    torchao."""

    needs_keyword = ("state_dtype", "state_dtype= keyword (8-bit state)")

    def min_bytes(self, size: Size, itemsize: int) -> int:
        return (2 * itemsize + itemsize + 4) * size.numel + (size.numel * 16) // 256

    def providers(self, compile: bool) -> tuple[str, ...]:
        return ("gradfuse", "torch-fused", "bitsandbytes", "torchao")

    def gradfuse_optimizer(self, params: list[Any], **extra: Any) -> Any:
        import torch

        # gradfuse.optim.AdamW8bit is this (with min_8bit_size=4096); `gradfuse check` covers
        # the AdamW it shares with the adamw case.
        return super().gradfuse_optimizer(params, state_dtype=torch.uint8, **extra)

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        if provider in ("gradfuse", "torch-fused"):
            return super().build(provider, size, dtype, device, copies, seed)
        calls = []
        for c in range(copies):
            params0, grads0 = _optimizer_inputs(size.shapes, dtype, device, seed + c)
            params = _leaves(params0, grads0, clone_grads=False)
            calls.append(_reference(provider, params).step)
        return Runner(calls)


def _reference(provider: str, params: list[Any]) -> Any:
    try:
        import importlib

        if provider == "bitsandbytes":
            return importlib.import_module("bitsandbytes.optim").AdamW8bit(params, **_KWARGS)
        return importlib.import_module("torchao.optim").AdamW8bit(params, **_KWARGS)
    except ImportError as exc:
        raise Unavailable(f"{provider} is not installed ({exc})") from None


CASES = [
    EightBitCase(
        "adamw8bit",
        "adam",
        optimizer="AdamW",
        kwargs=_KWARGS,
        description="AdamW(lr=1e-3, weight_decay=1e-2, state_dtype=torch.uint8), i.e. AdamW8bit; "
        "torch-fused: float32 AdamW(fused=True)",
        check_configs=(),
    ),
]
