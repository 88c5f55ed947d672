"""Where a gradfuse.optim.Muon step's time goes, over the bench's 48 matrices (issue 17).

    PYTHONPATH=python flock -x /tmp/gf-heavy.lock python benchmarks/cpu/scripts/muon/breakdown.py

Median of 5 steps after one untimed step, each configuration on fresh params and gradients.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from gradfuse.optim import Muon

SHAPES = [(256, 256)] * 24 + [(1024, 256)] * 12 + [(256, 1024)] * 12


def params() -> list[torch.nn.Parameter]:
    ps = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def median_ms(step: Callable[[], Any], n: int = 5) -> float:
    step()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2] * 1e3


def main() -> None:
    torch.manual_seed(0)
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("gradfuse default (bf16 iteration, batched)", Muon(params(), lr=0.02).step),
        ("gradfuse ns_dtype=float32", Muon(params(), lr=0.02, ns_dtype=torch.float32).step),
        (
            "gradfuse ns_steps=0 (fused passes, casts, norm)",
            Muon(params(), lr=0.02, ns_steps=0).step,
        ),
    ]
    opts = [Muon([p], lr=0.02) for p in params()]
    rows.append(("gradfuse one optimizer per matrix", lambda: [o.step() for o in opts]))
    rows.append(("torch ns_steps=0", torch.optim.Muon(params(), lr=0.02, ns_steps=0).step))
    for name, step in rows:
        print(f"{name}: {median_ms(step):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
