"""Host time of one optimizer step on many tiny tensors (issue 14): gradfuse against torch's
fused and foreach steps, interleaved in one process, median of many blocks.

    python benchmarks/cpu/scripts/engine/host_time.py [--tensors 300] [--numel 256] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time

import torch

import gradfuse

CASES = {
    "sgd_momentum_wd": ("SGD", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4}),
    "adamw": ("AdamW", {"lr": 1e-3}),
}


def make(n: int, numel: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(n):
        p = torch.nn.Parameter(torch.randn(numel, generator=gen))
        p.grad = torch.randn(numel, generator=gen)
        params.append(p)
    return params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tensors", type=int, default=300)
    ap.add_argument("--numel", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=41)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(gradfuse.get_num_threads())
    for case, (name, kw) in CASES.items():
        providers = {
            "gradfuse": getattr(gradfuse.optim, name)(make(args.tensors, args.numel), **kw),
            "torch-fused": getattr(torch.optim, name)(
                make(args.tensors, args.numel), fused=True, **kw
            ),
            "torch-foreach": getattr(torch.optim, name)(
                make(args.tensors, args.numel), foreach=True, **kw
            ),
        }
        times: dict[str, list[float]] = {p: [] for p in providers}
        for opt in providers.values():
            for _ in range(5):
                opt.step()
        for _ in range(args.blocks):
            for p, opt in providers.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    opt.step()
                times[p].append((time.perf_counter() - t0) / args.steps * 1e6)
        med = {p: statistics.median(t) for p, t in times.items()}
        line = ", ".join(f"{p} {med[p]:.0f} us" for p in providers)
        ratio = med["gradfuse"] / med["torch-fused"]
        print(f"{case} ({args.tensors} x {args.numel}): {line}; gradfuse/torch-fused {ratio:.2f}")
        if args.profile:
            opt = providers["gradfuse"]
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(200):
                opt.step()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
