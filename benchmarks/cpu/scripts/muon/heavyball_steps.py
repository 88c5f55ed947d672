"""heavyball 3.2.1's Muon over the bench's 48 matrices: the time of each of its first steps.

    python benchmarks/cpu/scripts/muon/heavyball_steps.py

The first step includes torch.compile (inductor) of heavyball's step. heavyball's step consumes
the gradients (sets ``p.grad`` to None), so they are re-assigned before every step.
"""

from __future__ import annotations

import time

import heavyball  # type: ignore[import-untyped]
import torch

SHAPES = [(256, 256)] * 24 + [(1024, 256)] * 12 + [(256, 1024)] * 12


def main() -> None:
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    grads = [torch.randn_like(p) for p in params]
    opt = heavyball.Muon(params, lr=0.02, weight_decay=0.1)
    for i in range(4):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        t0 = time.perf_counter()
        opt.step()
        print(f"heavyball step {i}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
