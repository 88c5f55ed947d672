"""How much faster can any optimizer make a whole training step? (issue 15)

For each model of the ``train_step`` bench cases this times, interleaved in one process:
- ``fwd_bwd``: zero_grad + forward + backward alone (what a free optimizer step would leave),
- ``torch``: the same + torch's fused AdamW step (with ``clip_grad_norm_(1.0)`` when clipping),
- ``gradfuse``: the same + gradfuse's AdamW step (``max_grad_norm=1.0`` when clipping).

``bound = torch / fwd_bwd`` is the whole-step ratio an optimizer whose step took no time at all
would reach against torch; ``gradfuse ratio = torch / gradfuse``; ``share`` is the part of that
possible gain gradfuse takes, ``(torch - gradfuse) / (torch - fwd_bwd)``.

    python benchmarks/cpu/scripts/train_step_bound.py [--rounds 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import gradfuse
from gradfuse.bench.cases.train_step import MLP, TRANSFORMER, ModelSize, build_model

BLOCK_S = 0.2  # one sample: back-to-back steps for at least this long


def _stepper(size: ModelSize, kind: str, clip: bool) -> Callable[[], None]:
    model, x, y = build_model(size, "cpu", seed=0)
    params = list(model.parameters())
    kwargs: dict[str, Any] = {"lr": 1e-4, "weight_decay": 1e-2}
    opt: Any = None
    if kind == "torch":
        opt = torch.optim.AdamW(params, fused=True, **kwargs)
    elif kind == "gradfuse":
        opt = gradfuse.optim.AdamW(params, max_grad_norm=1.0 if clip else None, **kwargs)

    def step() -> None:
        for p in params:
            p.grad = None
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        if kind == "torch":
            if clip:
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            opt.step()
        elif kind == "gradfuse":
            opt.step()

    return step


def _block(step: Callable[[], None]) -> float:
    """Seconds per step over a block of back-to-back steps."""
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= BLOCK_S:
            return elapsed / n


def measure(size: ModelSize, clip: bool, rounds: int) -> dict[str, float]:
    kinds = ("fwd_bwd", "torch", "gradfuse")
    steps = {k: _stepper(size, k, clip) for k in kinds}
    for s in steps.values():  # warm-up: state allocation, first-touch, thread wake-up
        for _ in range(3):
            s()
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(rounds):
        for k in kinds:  # interleaved: a slow moment of the machine hits every kind alike
            samples[k].append(_block(steps[k]))
    med = {k: statistics.median(v) for k, v in samples.items()}
    gain = med["torch"] - med["fwd_bwd"]
    return {
        **{f"{k}_ms": 1e3 * v for k, v in med.items()},
        "bound": med["torch"] / med["fwd_bwd"],
        "ratio": med["torch"] / med["gradfuse"],
        "share": (med["torch"] - med["gradfuse"]) / gain if gain > 0 else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, gradfuse "
        f"{gradfuse.__version__}, ISA {gradfuse._core.cpu_isa()}"
    )
    print("| model | clip | fwd+bwd ms | torch fused ms | gradfuse ms | bound | gradfuse | share |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for size in (MLP, TRANSFORMER):
        for clip in (False, True):
            r = measure(size, clip, args.rounds)
            rows.append({"model": size.name, "clip": clip, **r})
            print(
                f"| {size.name} | {'yes' if clip else 'no'} | {r['fwd_bwd_ms']:.2f} | "
                f"{r['torch_ms']:.2f} | {r['gradfuse_ms']:.2f} | {r['bound']:.3f}x | "
                f"{r['ratio']:.3f}x | {100 * r['share']:.0f}% |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
