"""CUDA graphs: a whole training step (forward, loss, backward, gradfuse Adam/AdamW step with
capturable=True) captured in a torch.cuda.CUDAGraph and replayed gives the parameters and state
of the same steps run eagerly with torch's optimizer; with a GradScaler too, including a replay
whose gradients are inf (skipped on the device). Capture itself proves the step never
synchronises with the host: a device sync inside torch.cuda.graph raises.

Runs on a GPU machine only (marked cuda); tests/functional/test_capturable.py covers the same
Python path (counters advanced and scalars computed with tensor ops, no host reads) on the CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import gradfuse
import tolerances
from gradfuse import functional as F

pytestmark = pytest.mark.cuda

WARMUP = 3
REPLAYS = 12
INF_BATCH = WARMUP + 4  # under GradScaler: this batch's gradients are inf, the step is skipped


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).cuda()


def _batches(n: int, inf_at: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for k in range(n):
        x = torch.randn(8, 16, generator=g)
        if k == inf_at:
            x[0, 0] = float("inf")
        out.append((x.cuda(), torch.randn(8, 4, generator=g).cuda()))
    return out


def _train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    scaler: torch.amp.GradScaler | None,
) -> torch.Tensor:
    opt.zero_grad(set_to_none=False)
    loss = nn.functional.mse_loss(model(x), y)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss


def _captured_run(
    make_opt: Callable[[Any], torch.optim.Optimizer],
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    scaler: torch.amp.GradScaler | None,
) -> torch.optim.Optimizer:
    """Warm up on a side stream (torch's recipe), capture one step, replay it per batch."""
    opt = make_opt(model.parameters())
    static_x, static_y = (t.clone() for t in batches[0])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for x, y in batches[:WARMUP]:
            static_x.copy_(x)
            static_y.copy_(y)
            _train_step(model, opt, static_x, static_y, scaler)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _train_step(model, opt, static_x, static_y, scaler)
    for x, y in batches[WARMUP:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
    torch.cuda.synchronize()
    return opt


def _eager_run(
    make_opt: Callable[[Any], torch.optim.Optimizer],
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    scaler: torch.amp.GradScaler | None,
) -> torch.optim.Optimizer:
    opt = make_opt(model.parameters())
    for x, y in batches:
        _train_step(model, opt, x, y, scaler)
    torch.cuda.synchronize()
    return opt


def _compare(ours: torch.optim.Optimizer, theirs: torch.optim.Optimizer, start: list[Any]) -> None:
    # Each step's ulp-level differences feed back through the next forward and backward: the
    # training-curve row (tolerances.py says why).
    tol = tolerances.TRAINING_CURVE
    our_params = [p for g in ours.param_groups for p in g["params"]]
    their_params = [p for g in theirs.param_groups for p in g["params"]]
    for i, (p, q, s) in enumerate(zip(our_params, their_params, start, strict=True)):
        tolerances.assert_close(p.detach(), q.detach(), tol, f"param {i}")
        assert not torch.equal(p.detach(), s), f"param {i} never moved"
        a, b = ours.state[p], theirs.state[q]
        assert a["step"].device == p.device  # capturable: the counter lives on the device
        assert float(a["step"]) == float(b["step"]), f"param {i}: step"
        assert a.keys() == b.keys()
        for key in b:
            if key != "step":  # exp_avg, exp_avg_sq, mu_product, square_avg, ...
                tolerances.assert_close(a[key], b[key], tol, f"param {i} {key}")


CASES = [
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 1e-2, "weight_decay": 0.1}),
    ("AdamW", {"lr": "tensor", "amsgrad": True, "maximize": True}),
]


def _kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if out.get("lr") == "tensor":  # a device lr, read on the device at every replay
        out["lr"] = torch.tensor(1e-2, device="cuda")
    return out


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_captured_training_step_matches_torch_eager(name: str, kwargs: dict[str, Any]) -> None:
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    batches = _batches(WARMUP + REPLAYS)

    def ours_opt(params: Any) -> torch.optim.Optimizer:
        cls = getattr(gradfuse.optim, name)
        return cls(params, capturable=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    def torch_opt(params: Any) -> torch.optim.Optimizer:
        cls = getattr(torch.optim, name)
        return cls(params, capturable=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    ours = _captured_run(ours_opt, copy.deepcopy(model), batches, None)
    theirs = _eager_run(torch_opt, copy.deepcopy(model), batches, None)
    _compare(ours, theirs, start)
    assert all(float(s["step"]) == WARMUP + REPLAYS for s in ours.state.values())


MORE_CASES = [
    ("Adamax", {"lr": 1e-2, "weight_decay": 0.1}),
    ("NAdam", {"lr": 1e-2, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("RAdam", {"lr": "tensor"}),  # REPLAYS > 6: both sides of RAdam's rectification
    ("RMSprop", {"lr": 1e-2, "momentum": 0.5, "centered": True}),
]


@pytest.mark.parametrize(("name", "kwargs"), MORE_CASES)
def test_captured_training_step_other_optimizers(name: str, kwargs: dict[str, Any]) -> None:
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    batches = _batches(WARMUP + REPLAYS)

    def ours_opt(params: Any) -> torch.optim.Optimizer:
        return getattr(gradfuse.optim, name)(params, capturable=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    def torch_opt(params: Any) -> torch.optim.Optimizer:
        return getattr(torch.optim, name)(params, capturable=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    ours = _captured_run(ours_opt, copy.deepcopy(model), batches, None)
    theirs = _eager_run(torch_opt, copy.deepcopy(model), batches, None)
    _compare(ours, theirs, start)


@pytest.mark.parametrize(("name", "kwargs"), CASES[:3])
def test_captured_grad_scaler_step_matches_torch_fused(name: str, kwargs: dict[str, Any]) -> None:
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    batches = _batches(WARMUP + REPLAYS, inf_at=INF_BATCH)

    def ours_opt(params: Any) -> torch.optim.Optimizer:
        cls = getattr(gradfuse.optim, name)
        return cls(params, capturable=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    def torch_opt(params: Any) -> torch.optim.Optimizer:
        # torch's fused step unscales inside the kernel and skips on found_inf on the device,
        # as gradfuse's does.
        cls = getattr(torch.optim, name)
        return cls(params, fused=True, **_kwargs(kwargs))  # type: ignore[no-any-return]

    our_scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, growth_interval=3)
    their_scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, growth_interval=3)
    ours = _captured_run(ours_opt, copy.deepcopy(model), batches, our_scaler)
    theirs = _eager_run(torch_opt, copy.deepcopy(model), batches, their_scaler)
    assert our_scaler.get_scale() == their_scaler.get_scale()
    _compare(ours, theirs, start)
    # The inf batch was skipped on the device: one step fewer than batches.
    assert all(float(s["step"]) == WARMUP + REPLAYS - 1 for s in ours.state.values())
    assert all(torch.isfinite(p).all() for p in ours.param_groups[0]["params"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_capturable_functional_cuda_matches_cpu(dtype: torch.dtype) -> None:
    shapes = [(7,), (3, 5), (4097,), (70000,), (0,)]
    cpu = [torch.randn(s).to(dtype) for s in shapes]
    runs = {}
    for device in ("cpu", "cuda"):
        params = [p.to(device) for p in cpu]
        state = [[torch.zeros_like(p) for p in params] for _ in range(3)]
        # Different counters per tensor: each reads its own row of the table.
        steps = [torch.tensor(float(3 * i), device=device) for i in range(len(params))]
        lr = torch.tensor(1e-2, device=device)
        for k in range(10):
            grads = [
                torch.randn(s, generator=torch.Generator().manual_seed(k)).to(dtype).to(device)
                for s in shapes
            ]
            F.adamw_(params, grads, *state, state_steps=steps, lr=lr, amsgrad=True, capturable=True)
        runs[device] = [*params, *(t for s in state for t in s)], steps
    (a, a_steps), (b, b_steps) = runs["cpu"], runs["cuda"]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        tolerances.assert_close(y.cpu(), x, tolerances.CPU_VS_CUDA[dtype], f"tensor {i}")
    assert [float(s) for s in a_steps] == [float(s) for s in b_steps]
