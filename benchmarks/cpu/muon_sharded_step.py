"""Time one gradfuse.optim.Muon step on sharded params (2 gloo ranks on this machine's CPUs)
against the same step unsharded in one process.

Workload: the `matrices` set of `gradfuse bench --ops muon` (24 of 256x256, 12 of 1024x256, 12
of 256x1024; 7.9M params), float32, Muon(lr=0.02) with torch's defaults. Sharded: every
matrix a DTensor with Shard(0) over a 2-rank CPU mesh (FSDP2's layout), one thread per rank.
Unsharded: one process with 1 thread, then with 2 (the same cores the two ranks use).

    PYTHONPATH=python python benchmarks/cpu/muon_sharded_step.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gradfuse

SHAPES = [(256, 256)] * 24 + [(1024, 256)] * 12 + [(256, 1024)] * 12


def _problem() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) * 0.02 for s in SHAPES]
    grads = [torch.randn(s, generator=gen) for s in SHAPES]
    return start, grads


def _time(opt: torch.optim.Optimizer, repeat: int, sync: bool) -> list[float]:
    opt.step()  # creates the state
    opt.step()  # warm-up
    out = []
    for _ in range(repeat):
        if sync:
            dist.barrier()
        t = time.perf_counter()
        opt.step()
        if sync:
            dist.barrier()
        out.append(time.perf_counter() - t)
    return out


def _rank(rank: int, world: int, port: int, repeat: int, q: mp.Queue) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.set_num_threads(1)
    os.environ["GRADFUSE_NUM_THREADS"] = "1"
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    mesh = init_device_mesh("cpu", (world,))
    start, grads = _problem()
    ps = [torch.nn.Parameter(distribute_tensor(s, mesh, [Shard(0)])) for s in start]
    for p, g in zip(ps, grads, strict=True):
        p.grad = distribute_tensor(g, mesh, [Shard(0)])
    times = _time(gradfuse.optim.Muon(ps, lr=0.02), repeat, sync=True)
    if rank == 0:
        q.put(times)
    dist.destroy_process_group()


def _unsharded(threads: int, repeat: int) -> list[float]:
    torch.set_num_threads(threads)
    start, grads = _problem()
    ps = [torch.nn.Parameter(s) for s in start]
    for p, g in zip(ps, grads, strict=True):
        p.grad = g
    return _time(gradfuse.optim.Muon(ps, lr=0.02), repeat, sync=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--port", type=int, default=29533)
    args = parser.parse_args()
    world = 2
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_rank, args=(r, world, args.port, args.repeat, q)) for r in range(world)
    ]
    for p in procs:
        p.start()
    sharded = q.get()
    for p in procs:
        p.join()
    rows = [("sharded, 2 gloo ranks x 1 thread", sharded)]
    for threads in (1, 2):
        rows.append(
            (f"unsharded, 1 process x {threads} thread(s)", _unsharded(threads, args.repeat))
        )
    print(f"torch {torch.__version__}, gradfuse {gradfuse.__version__}, {len(SHAPES)} matrices")
    print("| setting | median | min | max |\n|---|---:|---:|---:|")
    for name, ts in rows:
        ms = [t * 1e3 for t in ts]
        print(f"| {name} | {statistics.median(ms):.0f} ms | {min(ms):.0f} ms | {max(ms):.0f} ms |")


if __name__ == "__main__":
    main()
