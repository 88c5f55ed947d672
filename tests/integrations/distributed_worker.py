"""One rank of the 2-process gloo run behind test_distributed.py (not a test module).

Started by the test as ``python distributed_worker.py RANK WORLD STORE_PORT OUT_DIR NAMES``; it
joins the TCPStore the test hosts on 127.0.0.1 and, for every optimizer name, trains the same
small model with gradfuse's and with torch's optimizer in three settings:

- ddp:   DistributedDataParallel, the optimizer stepping all params on every rank;
- zero:  DDP + ZeroRedundancyOptimizer(optimizer_class=...) (each rank steps its partition),
         with consolidate_state_dict() after STEPS_A steps, the consolidated state saved by
         rank 0, then reloaded (torch.load(weights_only=True)) into a fresh model + ZeRO
         optimizer of each kind (gradfuse and torch) that trains the remaining steps;
- fsdp2: fully_shard (DTensor params; each rank's optimizer steps its local shards).

Every run's final parameters (full tensors) are saved to OUT_DIR/rank{RANK}.pt for the test to
compare across ranks and against torch; one process launch covers every case.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import integration_cases
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

STEPS_A = 3  # steps before the ZeRO checkpoint
STEPS_B = 3  # steps after it
DTYPE = torch.float32


def make_model() -> nn.Module:
    torch.manual_seed(1234)  # the same initial weights on every rank and in every run
    return nn.Sequential(nn.Linear(16, 33), nn.Tanh(), nn.Linear(33, 5)).to(DTYPE)


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Different data per rank (so gradients need the all-reduce), the same in every run."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(8, 16, generator=g, dtype=DTYPE), torch.randn(8, 5, generator=g, dtype=DTYPE)


def train(model: nn.Module, opt: Any, rank: int, steps: range) -> None:
    for step in steps:
        x, y = batch(rank, step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def full_params(model: nn.Module) -> list[torch.Tensor]:
    out = []
    for p in model.parameters():
        t = p.full_tensor() if hasattr(p, "full_tensor") else p
        out.append(t.detach().clone())
    return out


def run_ddp(kind: str, name: str, kw: dict[str, Any], rank: int) -> list[torch.Tensor]:
    model = DistributedDataParallel(make_model())
    opt = integration_cases.make(kind, name, model.parameters(), kw)
    train(model, opt, rank, range(STEPS_A + STEPS_B))
    return full_params(model)


def run_zero(
    kind: str, name: str, kw: dict[str, Any], rank: int, out_dir: str
) -> dict[str, list[torch.Tensor]]:
    cls = (
        integration_cases.gradfuse_class(name) if kind == "gradfuse" else getattr(torch.optim, name)
    )
    model = DistributedDataParallel(make_model())
    opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kw)
    train(model, opt, rank, range(STEPS_A))
    opt.consolidate_state_dict(to=0)
    path = os.path.join(out_dir, f"zero_{kind}_{name}.pt")
    if rank == 0:
        torch.save({"model": model.module.state_dict(), "optim": opt.state_dict()}, path)
    dist.barrier()
    res = {}
    # Reload into fresh objects of each kind: the checkpoint moves between gradfuse and torch.
    for load_kind in ("gradfuse", "torch"):
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
        m2 = DistributedDataParallel(make_model())
        m2.module.load_state_dict(ckpt["model"])
        cls2 = (
            integration_cases.gradfuse_class(name)
            if load_kind == "gradfuse"
            else getattr(torch.optim, name)
        )
        o2 = ZeroRedundancyOptimizer(m2.parameters(), optimizer_class=cls2, **kw)
        o2.load_state_dict(ckpt["optim"])
        train(m2, o2, rank, range(STEPS_A, STEPS_A + STEPS_B))
        res[f"reloaded_into_{load_kind}"] = full_params(m2)
    train(model, opt, rank, range(STEPS_A, STEPS_A + STEPS_B))
    res["uninterrupted"] = full_params(model)
    return res


def run_fsdp2(kind: str, name: str, kw: dict[str, Any], rank: int) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = make_model()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = integration_cases.make(kind, name, model.parameters(), kw)
    train(model, opt, rank, range(STEPS_A + STEPS_B))
    state_types = sorted(
        {type(v).__name__ for s in opt.state.values() for v in s.values() if torch.is_tensor(v)}
    )
    local_shapes = [tuple(p.to_local().shape) for p in model.parameters()]
    return {"params": full_params(model), "state_types": state_types, "local_shapes": local_shapes}


def main() -> None:
    rank, world, port, out_dir, names = (
        int(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
        sys.argv[5].split(","),
    )
    torch.set_num_threads(1)  # two ranks share the machine's cores
    store = dist.TCPStore("127.0.0.1", port, world_size=world, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    results: dict[str, Any] = {}
    cases = dict(integration_cases.available(tuple(names)))
    for name, kw in cases.items():
        for kind in ("gradfuse", "torch"):
            results[f"{name}/ddp/{kind}"] = run_ddp(kind, name, kw, rank)
            results[f"{name}/zero/{kind}"] = run_zero(kind, name, kw, rank, out_dir)
            results[f"{name}/fsdp2/{kind}"] = run_fsdp2(kind, name, kw, rank)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
