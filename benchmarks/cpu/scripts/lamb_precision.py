"""LAMB step time, 16M float32 params (one tensor), CPU: the default storage beside the precision
policies and 8-bit state (benchmarks/cpu/2026-12-06-lamb-precision.md). Median of 12 steps after
3 warm-up steps; bitsandbytes: 3 steps."""

import time

import torch

import gradfuse.optim as go

torch.manual_seed(0)
N = 16 * 1024 * 1024


def run(make, dtype=torch.float32, steps=12):
    p = torch.randn(N, dtype=torch.float32).to(dtype).requires_grad_()
    p.grad = torch.randn(N).to(dtype)
    opt = make([p])
    for _ in range(3):
        opt.step()
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        opt.step()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3


kw = {"lr": 1e-3, "max_grad_norm": 0}
cases = [
    ("LAMB f32 (default storage)", lambda ps: go.LAMB(ps, **kw), torch.float32),
    (
        "LAMB f32, bf16 state",
        lambda ps: go.LAMB(ps, state_dtype=torch.bfloat16, **kw),
        torch.float32,
    ),
    ("LAMB8bit f32", lambda ps: go.LAMB8bit(ps, **kw), torch.float32),
    ("LAMB bf16 params (default)", lambda ps: go.LAMB(ps, **kw), torch.bfloat16),
    (
        "LAMB bf16 + master, f32 state",
        lambda ps: go.LAMB(ps, master_weights=True, state_dtype=torch.float32, **kw),
        torch.bfloat16,
    ),
    (
        "LAMB8bit bf16 + master",
        lambda ps: go.LAMB8bit(ps, master_weights=True, **kw),
        torch.bfloat16,
    ),
    ("AdamW8bit f32 (engine, same run)", lambda ps: go.AdamW8bit(ps, lr=1e-3), torch.float32),
]
for name, make, dt in cases:
    print(f"{name:40s} {run(make, dt):8.2f} ms", flush=True)
try:
    import bitsandbytes as bnb

    print(
        f"{'bitsandbytes LAMB8bit f32':40s} {run(lambda ps: bnb.optim.LAMB8bit(ps, lr=1e-3), steps=3):8.2f} ms",
        flush=True,
    )
except Exception as e:  # noqa
    print("bnb:", type(e).__name__, str(e)[:200])
