"""One rank of the 2-process gloo run behind test_muon_sharded.py (not a test module).

Started as ``python muon_sharded_worker.py RANK WORLD STORE_PORT OUT_DIR``. Every rank runs, in
one process launch:

- dtensor: gradfuse.optim.Muon (Muon and AdamW groups) on DTensor params sharded every way the
  sharded path handles (Shard(0), Shard(1), a 3-D weight's Shard(2), uneven shards, a rank with
  an empty shard, Replicate), with the same gradients on every rank; beside it, the same
  optimizer on plain tensors in this process (the single-process reference); then a
  state_dict round trip of the sharded optimizer (saved mid-run, loaded into a fresh optimizer
  over fresh DTensor params, run to the end);
- fsdp2: a small network under fully_shard trained with Muon + auxiliary AdamW
  (muon_param_groups), each rank on its half of every batch; beside it, the same network
  trained in this process on the whole batch.

Results (full tensors) go to OUT_DIR/rank{RANK}.pt for the test to compare.
"""

from __future__ import annotations

import io
import math
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import gradfuse

STEPS = 4
SPLIT = 2  # the state_dict round trip saves after SPLIT steps

# (global shape, placement, use_muon): every placement of the sharded path on a world of 2.
PARAMS: list[tuple[tuple[int, ...], str, bool]] = [
    ((33, 16), "S0", True),  # uneven rows: 17 + 16
    ((16, 33), "S1", True),  # columns, uneven: 17 + 16
    ((33, 16), "S0", True),  # same shape: one batch on its owner
    ((6, 4, 5), "S2", True),  # a 3-D weight, as the (6, 20) matrix, cut along its last dim
    ((1, 8), "S0", True),  # rank 1 holds an empty shard
    ((12, 12), "R", True),  # replicated: whole matrices, no exchange
    ((24, 7), "S0", True),
    ((33,), "S0", False),  # AdamW group: elementwise on the shards
    ((10, 4), "S0", False),
    ((5,), "R", False),
]

OPTIONS: dict[str, dict[str, Any]] = {
    "default": {"lr": 0.02},  # bfloat16 Newton-Schulz, Nesterov, weight decay 0.1
    "float32": {
        "lr": 0.02,
        "ns_dtype": torch.float32,
        "nesterov": False,
        "adjust_lr_fn": "match_rms_adamw",
        "weight_decay": 0.05,
        "max_grad_norm": 10.0,  # the grads' global norm is ~75: clipped every step
    },
}
NORM_TYPES = (2.0, 1.0, 3.0, math.inf, -math.inf, 0.0)


def _placement(code: str) -> Any:
    from torch.distributed.tensor import Replicate, Shard

    return Replicate() if code == "R" else Shard(int(code[1:]))


def _problem() -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(7)  # the same on every rank
    start = [torch.randn(s, generator=gen) for s, _, _ in PARAMS]
    grads = [[torch.randn(s, generator=gen) for s, _, _ in PARAMS] for _ in range(STEPS)]
    return start, grads


def _groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
    return [
        {"params": [p for p, (_, _, m) in zip(ps, PARAMS, strict=True) if m]},
        {
            "params": [p for p, (_, _, m) in zip(ps, PARAMS, strict=True) if not m],
            "use_muon": False,
        },
    ]


def _full(t: Any) -> torch.Tensor:
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().clone()


def _sharded(mesh: Any, ts: list[torch.Tensor]) -> list[Any]:
    from torch.distributed.tensor import distribute_tensor

    return [
        distribute_tensor(t.clone(), mesh, [_placement(c)])
        for t, (_, c, _) in zip(ts, PARAMS, strict=True)
    ]


def run_norms(mesh: Any) -> dict[str, Any]:
    """gradfuse.grad_norms and clip_grad_norm_'s total over DTensor gradients (what
    max_grad_norm uses), every norm type; beside them the float64 norms of the whole grads."""
    _, grads = _problem()
    ps = [nn.Parameter(torch.zeros_like(g)) for g in _sharded(mesh, grads[0])]
    for p, g in zip(ps, _sharded(mesh, grads[0]), strict=True):
        p.grad = g
    out: dict[str, Any] = {}
    for norm_type in NORM_TYPES:
        out[f"sharded/{norm_type}/each"] = gradfuse.grad_norms(ps, norm_type)
        out[f"sharded/{norm_type}/total"] = gradfuse.clip_grad_norm_(ps, math.inf, norm_type)
        each = torch.stack([torch.linalg.vector_norm(g.double(), norm_type) for g in grads[0]])
        out[f"float64/{norm_type}/each"] = each
        out[f"float64/{norm_type}/total"] = torch.linalg.vector_norm(each, norm_type)
    return out


def run_dtensor(mesh: Any, kw: dict[str, Any]) -> dict[str, Any]:
    start, grads = _problem()

    def sharded(ts: list[torch.Tensor]) -> list[Any]:
        return _sharded(mesh, ts)

    def steps(ps: list[Any], opt: Any, which: range, dt: bool) -> None:
        for k in which:
            for p, g in zip(ps, sharded(grads[k]) if dt else grads[k], strict=True):
                p.grad = g
            opt.step()

    # The single-process reference: plain tensors, the same optimizer.
    plain = [nn.Parameter(t.clone()) for t in start]
    plain_opt = gradfuse.optim.Muon(_groups(plain), **kw)
    steps(plain, plain_opt, range(STEPS), dt=False)
    # Sharded, uninterrupted.
    ps = [nn.Parameter(d) for d in sharded(start)]
    opt = gradfuse.optim.Muon(_groups(ps), **kw)
    steps(ps, opt, range(SPLIT), dt=True)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in ps], "optim": opt.state_dict()}, buf)
    steps(ps, opt, range(SPLIT, STEPS), dt=True)
    # Resumed from the checkpoint: fresh params and optimizer.
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=False)
    ps2 = [nn.Parameter(t.clone()) for t in ckpt["params"]]
    opt2 = gradfuse.optim.Muon(_groups(ps2), **kw)
    opt2.load_state_dict(ckpt["optim"])
    steps(ps2, opt2, range(SPLIT, STEPS), dt=True)

    def state(o: Any, params: list[Any]) -> list[dict[str, Any]]:
        return [
            {k: _full(v) if torch.is_tensor(v) else v for k, v in o.state[p].items()}
            for p in params
        ]

    return {
        "sharded": [_full(p) for p in ps],
        "resumed": [_full(p) for p in ps2],
        "plain": [_full(p) for p in plain],
        "state": state(opt, ps),
        "plain_state": state(plain_opt, plain),
        "state_types": [sorted({type(v).__name__ for v in opt.state[p].values()}) for p in ps],
        "resumed_state_types": [
            sorted({type(v).__name__ for v in opt2.state[p].values()}) for p in ps2
        ],
        "local_shapes": [tuple(p.to_local().shape) for p in ps],
    }


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1234)  # the same initial weights on every rank and in every run
        self.embed = nn.Embedding(11, 16)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(16, 33), nn.Tanh(), nn.Linear(33, 16)) for _ in range(2)
        )
        self.head = nn.Linear(16, 5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx).mean(1)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, 11, (16, 3), generator=g), torch.randn(16, 5, generator=g)


def _train(model: nn.Module, opt: Any, part: slice) -> None:
    for step in range(STEPS):
        x, y = _batch(step)
        opt.zero_grad()
        nn.functional.mse_loss(model(x[part]), y[part]).backward()
        opt.step()


def run_fsdp2(mesh: Any, rank: int) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard

    kw: dict[str, Any] = {"muon": {"lr": 0.02}, "adamw": {"lr": 3e-3}}
    opt_kw: dict[str, Any] = {"ns_dtype": torch.float32, "weight_decay": 0.01}
    ref = Net()
    ref_opt = gradfuse.optim.Muon(gradfuse.optim.muon_param_groups(ref, **kw), **opt_kw)
    _train(ref, ref_opt, slice(None))  # the whole batch, in this process
    model = Net()
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the params are DTensors now; the groups see global shapes
    opt = gradfuse.optim.Muon(gradfuse.optim.muon_param_groups(model, **kw), **opt_kw)
    _train(model, opt, slice(8 * rank, 8 * rank + 8))  # each rank its half of the batch
    return {
        "sharded": [_full(p) for p in model.parameters()],
        "plain": [_full(p) for p in ref.parameters()],
        "local_shapes": [tuple(p.to_local().shape) for p in model.parameters()],
        "state_types": sorted(
            {type(v).__name__ for s in opt.state.values() for v in s.values() if torch.is_tensor(v)}
        ),
    }


def main() -> None:
    rank, world, port, out_dir = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)  # two ranks share the machine's cores
    store = dist.TCPStore("127.0.0.1", port, world_size=world, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    results: dict[str, Any] = {}
    for name, kw in OPTIONS.items():
        results[f"dtensor/{name}"] = run_dtensor(mesh, kw)
    results["fsdp2"] = run_fsdp2(mesh, rank)
    results["norms"] = run_norms(mesh)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
