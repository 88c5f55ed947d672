"""gradfuse.optim.Muon against torch.optim.Muon and heavyball's Muon.

The workload is a transformer's hidden matrices (the params Muon is for): 24 of 256x256 (q, k,
v, o of 6 layers), 12 of 1024x256 and 12 of 256x1024 (MLP in/out), 7.9M params. A step is
dominated by the Newton-Schulz matmuls (5 iterations of three products per matrix): torch runs
them one matrix at a time in bfloat16; gradfuse batches the matrices of one shape and runs the
same bfloat16-rounded iteration as float32 matmuls (gradfuse/functional/_muon.py).

heavyball (``heavyball.Muon``, torch.compile-based) is timed with ``--compile`` when it is
installed; its Muon is
not the same algorithm (its own Newton-Schulz coefficients per iteration, its own momentum and
learning-rate conventions), so it is a speed comparison only and ``gradfuse check`` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradfuse.bench._case import (
    HEAVYBALL_PROVIDER,
    OptimizerCase,
    Runner,
    Size,
    Step,
    Unavailable,
    _leaves,
    _optimizer_inputs,
    with_grads,
)

MATRICES = Size(
    "matrices",
    ((256, 256),) * 24 + ((1024, 256),) * 12 + ((256, 1024),) * 12,
    "24 of 256x256, 12 of 1024x256, 12 of 256x1024: 48 tensors, 7.9M params",
)
MATRICES_SMALL = Size(
    "matrices-small",
    ((128, 128),) * 8 + ((512, 128),) * 4 + ((128, 512),) * 4,
    "8 of 128x128, 4 of 512x128, 4 of 128x512: 16 tensors, 0.7M params",
)


@dataclass
class MuonCase(OptimizerCase):
    """A Muon step over matrices; providers gradfuse, torch's for-loop (torch's Muon has no
    foreach or fused path) and heavyball."""

    # gradfuse check: matrices (square, wide, tall, a row, empty, repeated shapes) and the
    # tolerance row of a bfloat16 iteration (gradfuse._tolerances.MUON_BF16_NS).
    check_shapes: tuple[tuple[int, ...], ...] = (
        (16, 16),
        (7, 12),
        (12, 7),
        (1, 9),
        (0, 4),
        (16, 16),
    )
    check_table: str = "MUON_BF16_NS"

    def sizes(self, quick: bool) -> list[Size]:
        return [MATRICES_SMALL] if quick else [MATRICES]

    def parse_size(self, token: str) -> Size | None:
        """``matrices``, ``matrices-small``, or ``RxC``: one R x C matrix."""
        named = {s.name: s for s in (MATRICES, MATRICES_SMALL)}.get(token)
        if named is not None:
            return named
        parts = token.lower().split("x")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return Size(token, ((int(parts[0]), int(parts[1])),), f"one {token} matrix")
        return None

    def providers(self, compile: bool) -> tuple[str, ...]:
        # heavyball compiles its step with torch.compile: timed with --compile, as torch-compile.
        return ("gradfuse", "torch-forloop", *((HEAVYBALL_PROVIDER,) if compile else ()))

    def torch_optimizer(
        self, params: list[Any], *, foreach: bool, fused: bool, **extra: Any
    ) -> Any:
        import torch

        if foreach or fused:
            raise Unavailable("torch's Muon has only its for-loop implementation")
        return torch.optim.Muon(params, **{**self.kwargs, **extra})

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        if provider != HEAVYBALL_PROVIDER:
            return super().build(provider, size, dtype, device, copies, seed)
        try:
            import heavyball  # type: ignore[import-untyped]
        except ImportError:
            raise Unavailable("heavyball is not installed") from None
        calls: list[Step] = []
        for c in range(copies):
            params0, grads0 = _optimizer_inputs(size.shapes, dtype, device, seed + c)
            params = _leaves(params0, grads0, clone_grads=False)
            opt = heavyball.Muon(
                params, lr=self.kwargs["lr"], weight_decay=self.kwargs["weight_decay"]
            )
            calls.append(with_grads(opt, params, [p.grad for p in params]))
        return Runner(calls)


CASES = [
    MuonCase(
        "muon",
        "muon",
        optimizer="Muon",
        kwargs={"lr": 0.02, "weight_decay": 0.1},
        description="Muon(lr=0.02, weight_decay=0.1), Newton-Schulz in bfloat16 as torch's",
        check_configs=(
            {},
            {"nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
            {"momentum": 0.9, "weight_decay": 0.0, "ns_steps": 3},
        ),
    ),
]
