"""gradfuse.optim.{Adam, AdamW, Adamax, NAdam, RAdam} against torch's for-loop implementations:
100-step trajectories of params AND state, every option combination, every dtype, odd and empty
sizes, many tensors, the threaded path."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _more_helpers import one_torch_thread

import gradfuse
import tolerances
from optim_testing import SIZES, make_params, random_grads

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

STEPS = 100
LR = 0.01  # large enough that 100 steps move the params well away from the start


def _product(**axes: tuple[Any, ...]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


# Every option combination each optimizer has (weight decay: off, L2, decoupled).
OPTIONS: dict[str, list[dict[str, Any]]] = {
    "Adam": _product(
        weight_decay=(0.0, 0.1),
        decoupled_weight_decay=(False, True),
        amsgrad=(False, True),
        maximize=(False, True),
    ),
    "AdamW": _product(weight_decay=(0.0, 0.1), amsgrad=(False, True), maximize=(False, True)),
    "Adamax": _product(weight_decay=(0.0, 0.1), maximize=(False, True)),
    "NAdam": _product(
        weight_decay=(0.0, 0.1), decoupled_weight_decay=(False, True), maximize=(False, True)
    ),
    "RAdam": _product(
        weight_decay=(0.0, 0.1), decoupled_weight_decay=(False, True), maximize=(False, True)
    ),
}
# Drop duplicates: decoupled_weight_decay changes nothing without weight decay.
for _name in ("Adam", "NAdam", "RAdam"):
    OPTIONS[_name] = [
        o for o in OPTIONS[_name] if o["weight_decay"] != 0.0 or not o["decoupled_weight_decay"]
    ]
# Hyperparameters away from the defaults: torch's lerp takes its other branch for beta1 < 0.5;
# a larger momentum_decay; eps large enough to matter.
EXTRA: list[tuple[str, dict[str, Any]]] = [
    ("Adam", {"betas": (0.3, 0.9), "eps": 1e-3}),
    ("AdamW", {"betas": (0.0, 0.5), "amsgrad": True}),
    ("Adamax", {"betas": (0.4, 0.99), "eps": 1e-2}),
    ("NAdam", {"betas": (0.3, 0.95), "momentum_decay": 0.1}),
    ("RAdam", {"betas": (0.45, 0.99)}),
]
CASES = [(name, o) for name, opts in OPTIONS.items() for o in opts] + EXTRA


def _ids(case: tuple[str, dict[str, Any]]) -> str:
    name, opts = case
    return name + "".join(f"-{k}={v}" for k, v in opts.items())


def _ours(name: str, **kw: Any) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    return lambda ps: getattr(gradfuse.optim, name)(ps, **kw)


def _torch(name: str, **kw: Any) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    return lambda ps: getattr(torch.optim, name)(ps, foreach=False, **kw)


def _run(
    make_opt: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor | None]],
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    opt = make_opt(ps)
    for step_grads in grads:
        for p, g in zip(ps, step_grads, strict=True):
            p.grad = None if g is None else g.to(p.dtype).clone()
        opt.step()
    return [p.detach() for p in ps], opt


def _state_tensors(opt: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    """Every state entry, in param order, with its name (``step`` included)."""
    out = []
    for group in opt.param_groups:
        for i, p in enumerate(group["params"]):
            for key, value in sorted(opt.state[p].items()):
                out.append((f"param {i} {key}", value))
    return out


def check_against_torch(
    name: str,
    opts: dict[str, Any],
    dtype: torch.dtype,
    *,
    shapes: Any = SIZES,
    steps: int = STEPS,
    drop_grads: bool = False,
) -> None:
    """Run gradfuse and torch (foreach=False) over the same gradients; compare params and every
    state tensor (the 16-bit dtypes through tolerances.assert_low_precision against float64)."""
    params = make_params(shapes, dtype)
    grads: list[list[torch.Tensor | None]] = list(random_grads(params, steps))
    if drop_grads:
        # Some params miss some steps: their step counters diverge inside one param group.
        for k, gs in enumerate(grads):
            for i in range(len(gs)):
                if (k * 7 + i * 3) % 5 == 0:
                    gs[i] = None
    kw = {"lr": LR, **opts}
    if dtype == torch.float16 and "eps" not in opts:
        # eps=1e-8 is below float16's range: torch's own float16 run then divides by zero
        # (inf/NaN) wherever exp_avg_sq underflows, which would make the comparison vacuous.
        kw["eps"] = 1e-4
    got, ours = _run(_ours(name, **kw), params, grads)
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        same, theirs = _run(_torch(name, **kw), params, grads)
        ref, ref_opt = _run(
            _torch(name, **kw),
            [p.double() for p in params],
            [[None if g is None else g.double() for g in gs] for gs in grads],
        )
        for i, (a, b, r) in enumerate(zip(got, same, ref, strict=True)):
            assert torch.isfinite(b).all(), "torch's own run is not finite: no bound to meet"
            tolerances.assert_low_precision(a, b, r, msg=f"{name} {opts} param {i}")
        triples = zip(
            _state_tensors(ours), _state_tensors(theirs), _state_tensors(ref_opt), strict=True
        )
        for (key, a), (key_t, b), (_, r) in triples:
            assert key == key_t
            if key.endswith(("step", "mu_product")):
                assert torch.equal(a, b), key
            else:
                tolerances.assert_low_precision(a, b, r, msg=f"{name} {opts} {key}")
        return
    want, theirs = _run(_torch(name, **kw), params, grads)
    tol = tolerances.TRAJECTORY[dtype]
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        tolerances.assert_close(a, b, tol, msg=f"{name} {opts} param {i}")
    ours_state, their_state = _state_tensors(ours), _state_tensors(theirs)
    assert [k for k, _ in ours_state] == [k for k, _ in their_state]
    for (key, a), (_, b) in zip(ours_state, their_state, strict=True):
        assert (a.dtype, a.device, a.shape) == (b.dtype, b.device, b.shape), key
        if key.endswith(("step", "mu_product")):
            assert torch.equal(a, b), f"{key}: {a} vs {b}"
        else:
            tolerances.assert_close(a, b, tol, msg=f"{name} {opts} {key}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_trajectory_matches_torch(dtype: torch.dtype, case: tuple[str, dict[str, Any]]) -> None:
    check_against_torch(*case, dtype)


# 16-bit: a representative subset (each optimizer's defaults plus its richest mode).
LOW_PRECISION_CASES = [
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    ("AdamW", {"amsgrad": True}),
    ("Adamax", {"weight_decay": 0.1}),
    ("NAdam", {}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {}),
    ("RAdam", {"weight_decay": 0.1, "maximize": True}),
]


@pytest.mark.parametrize("dtype", tolerances.LOW_PRECISION_DTYPES, ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=_ids)
def test_low_precision_trajectory(dtype: torch.dtype, case: tuple[str, dict[str, Any]]) -> None:
    check_against_torch(*case, dtype)


NAMES = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]


@pytest.mark.parametrize("name", NAMES)
def test_many_tensors_with_missing_grads(name: str) -> None:
    # ~150 tensors of a small transformer stack in one group, some grads missing on some steps
    # (per-param step counters differ within one native call's group).
    shapes: list[tuple[int, ...]] = [(300, 16)]
    for _ in range(12):
        shapes += [(48, 16), (48,), (16, 16), (16,), (64, 16), (64,), (16, 64), (16,)]
        shapes += [(16,), (16,), (16,), (16,)]
    check_against_torch(
        name, {"weight_decay": 0.01}, torch.float32, shapes=shapes, steps=30, drop_grads=True
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_threaded_large_tensor(name: str, dtype: torch.dtype) -> None:
    # Above the engine's parallel grain: the elements are split over the threads.
    check_against_torch(name, {"weight_decay": 0.01}, dtype, shapes=[(1 << 17) + 3, 5], steps=20)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"])
def test_tensor_lr(name: str) -> None:
    # A tensor lr enters torch's scalar expressions as a float32 tensor: the same arithmetic.
    check_against_torch(name, {"lr": torch.tensor(0.02), "weight_decay": 0.1}, torch.float32)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas(name: str) -> None:
    betas = (torch.tensor(0.8), torch.tensor([0.99]))
    check_against_torch(name, {"betas": betas, "amsgrad": True}, torch.float64)
    check_against_torch(name, {"betas": betas}, torch.float32)


def test_complex_params_match_torch() -> None:
    # torch updates complex params through their real view; so does gradfuse.
    p0 = torch.randn(33, dtype=torch.complex64)
    a = p0.clone().requires_grad_(True)
    b = p0.clone().requires_grad_(True)
    ours = gradfuse.optim.AdamW([a], lr=LR, amsgrad=True)
    theirs = torch.optim.AdamW([b], lr=LR, amsgrad=True, foreach=False)
    for _ in range(20):
        g = torch.randn(33, dtype=torch.complex64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    tolerances.assert_close(a.detach(), b.detach(), tolerances.TRAJECTORY[torch.float32])


BITWISE_CASES = [
    ("Adam", {"amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"betas": (0.3, 0.9)}),  # the other lerp branch
    ("Adamax", {"weight_decay": 0.1}),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"weight_decay": 0.1}),
]


@pytest.mark.parametrize("case", BITWISE_CASES, ids=_ids)
def test_isa_paths_and_thread_counts_agree_bitwise(case: tuple[str, dict[str, Any]]) -> None:
    name, opts = case
    # Every compiled ISA path and every thread count run the same rule without contraction:
    # identical bits, every dtype.
    core = gradfuse._native.core()
    isas = core.cpu_isas().split(",")
    active, threads = core.cpu_isa(), gradfuse.get_num_threads()
    try:
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            params = make_params(((1 << 16) + 5, 33), dtype)
            grads = random_grads(params, 8)
            runs = []
            for isa, n in [(isa, threads) for isa in isas] + [(isas[0], 1)]:
                core.set_cpu_isa(isa)
                gradfuse.set_num_threads(n)
                got, opt = _run(_ours(name, lr=LR, **opts), params, list(grads))
                runs.append((f"{isa}/{n} threads", got + [t for _, t in _state_tensors(opt)]))
            for label, tensors in runs[1:]:
                for a, b in zip(runs[0][1], tensors, strict=True):
                    assert torch.equal(a, b), f"{dtype}: {label} differs from {runs[0][0]}"
    finally:
        core.set_cpu_isa(active)
        gradfuse.set_num_threads(threads)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", BITWISE_CASES, ids=_ids)
def test_cuda_matches_cpu(case: tuple[str, dict[str, Any]], dtype: torch.dtype) -> None:
    # The same shared rule on both backends: a few ulp apart (CUDA's division and sqrt are
    # IEEE-rounded too; nvcc may contract multiply-adds).
    name, opts = case
    params = make_params((1, 7, 4097, 0, (1 << 17) + 3), dtype)
    grads = random_grads(params, 20)
    on_cpu, cpu_opt = _run(_ours(name, lr=LR, **opts), params, list(grads))
    on_cuda, cuda_opt = _run(
        _ours(name, lr=LR, **opts),
        [p.cuda() for p in params],
        [[g.cuda() for g in gs] for gs in grads],
    )
    tol = tolerances.CPU_VS_CUDA[dtype]
    for i, (a, b) in enumerate(zip(on_cpu, on_cuda, strict=True)):
        tolerances.assert_close(b.cpu(), a, tol, msg=f"{name} param {i}")
    for (key, a), (_, b) in zip(_state_tensors(cpu_opt), _state_tensors(cuda_opt), strict=True):
        tolerances.assert_close(b.cpu(), a, tol, msg=f"{name} {key}")
