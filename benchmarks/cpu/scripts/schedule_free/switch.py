"""The schedule-free train/eval switch (one eval() + one train(), i.e. two lerp passes over the
params) of gradfuse and of the schedulefree package, in one process, interleaved.

    flock -x /tmp/gf-heavy.lock python switch.py [--sizes 16M,model] [--repeat 9]

Prints the median time of each and the ratio; float32, CPU, torch's and gradfuse's default
thread counts. (gradfuse bench times steps, not the switch, hence this script.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gradfuse
from gradfuse.bench._case import MODEL, ONE_16M


def _params(shapes: tuple[tuple[int, ...], ...], seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.randn(s, generator=gen).requires_grad_()
        p.grad = torch.randn(s, generator=gen)
        ps.append(p)
    return ps


def _median_ms(fn: Callable[[], object], repeat: int, inner: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return 1e3 * statistics.median(times)


def main() -> None:
    import schedulefree

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="16M,model")
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    sizes = {"16M": ONE_16M, "model": MODEL}
    print(
        f"gradfuse {gradfuse.__version__}, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, ISA {gradfuse._native.core().cpu_isa()}"
    )
    for name in args.sizes.split(","):
        size = sizes[name]
        # The switch: eval() then train() after one step (so every param has its z).
        ours_p, theirs_p = _params(size.shapes, 0), _params(size.shapes, 0)
        ours = gradfuse.optim.ScheduleFreeAdamW(ours_p)
        theirs = schedulefree.AdamWScheduleFree(theirs_p)
        for opt in (ours, theirs):
            opt.train()
            opt.step()

        def switch(opt: object) -> Callable[[], None]:
            def run() -> None:
                opt.eval()  # type: ignore[attr-defined]
                opt.train()  # type: ignore[attr-defined]

            return run

        rows = {}
        for _ in range(2):  # warm-up round, then the measured one (interleaved providers)
            rows["switch gradfuse"] = _median_ms(switch(ours), args.repeat, 3)
            rows["switch schedulefree"] = _median_ms(switch(theirs), args.repeat, 3)
        print(
            f"{name}: eval()+train() gradfuse {rows['switch gradfuse']:.2f} ms, schedulefree "
            f"{rows['switch schedulefree']:.2f} ms "
            f"({rows['switch schedulefree'] / rows['switch gradfuse']:.2f}x)"
        )
        del ours, theirs, ours_p, theirs_p


if __name__ == "__main__":
    main()
