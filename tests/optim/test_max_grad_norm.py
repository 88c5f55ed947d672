"""The max_grad_norm extension (optim/_optimizer.FusedOptimizer._clip_coef): equal to torch's clip_grad_norm_
followed by the optimizer, gradients left unclipped, torch-loadable checkpoints, AMP."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from _more_helpers import leaves, one_torch_thread, random_problem, run_steps

from gradfuse.optim import (
    ADOPT,
    SGD,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    AdEMAMix,
    Lion,
    NAdam,
    RAdam,
    RMSprop,
)
from gradfuse.testing import ADOPT as ReferenceADOPT
from gradfuse.testing import AdEMAMix as ReferenceAdEMAMix
from gradfuse.testing import Lion as ReferenceLion
from tolerances import CLIPPED_FLOAT64, STEP, TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

MAX_NORM = 2.0

# (name, gradfuse factory with max_grad_norm, reference factory without clipping)
CASES: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
    (
        "sgd",
        lambda ps, **kw: SGD(ps, lr=0.05, momentum=0.9, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, foreach=False),
    ),
    (
        "adagrad",
        lambda ps, **kw: Adagrad(ps, lr=0.05, weight_decay=0.01, **kw),
        lambda ps: torch.optim.Adagrad(ps, lr=0.05, weight_decay=0.01, foreach=False),
    ),
    (
        "rmsprop",
        lambda ps, **kw: RMSprop(ps, lr=0.01, momentum=0.5, **kw),
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, momentum=0.5, foreach=False),
    ),
    (
        "lion",
        lambda ps, **kw: Lion(ps, lr=1e-3, weight_decay=0.1, **kw),
        lambda ps: ReferenceLion(ps, lr=1e-3, weight_decay=0.1),
    ),
    (
        "adam_amsgrad",
        lambda ps, **kw: Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01, **kw),
        lambda ps: torch.optim.Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01, foreach=False),
    ),
    (
        "adamw",
        lambda ps, **kw: AdamW(ps, lr=0.01, **kw),
        lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=False),
    ),
    (
        "adamax",
        lambda ps, **kw: Adamax(ps, lr=0.01, **kw),
        lambda ps: torch.optim.Adamax(ps, lr=0.01, foreach=False),
    ),
    (
        "nadam",
        lambda ps, **kw: NAdam(ps, lr=0.01, **kw),
        lambda ps: torch.optim.NAdam(ps, lr=0.01, foreach=False),
    ),
    (
        "radam",
        lambda ps, **kw: RAdam(ps, lr=0.01, **kw),
        lambda ps: torch.optim.RAdam(ps, lr=0.01, foreach=False),
    ),
    (
        "adopt",
        lambda ps, **kw: ADOPT(ps, lr=0.01, weight_decay=0.01, **kw),
        lambda ps: ReferenceADOPT(ps, lr=0.01, weight_decay=0.01),
    ),
    (
        "ademamix",
        lambda ps, **kw: AdEMAMix(ps, lr=0.01, t_alpha=5, **kw),
        lambda ps: ReferenceAdEMAMix(ps, lr=0.01, t_alpha=5),
    ),
]


def clip_then(ref: Any, max_norm: float) -> Any:
    """torch's clip_grad_norm_ before every step of ``ref``."""
    step = ref.step

    def clipped_step() -> None:
        params = [p for g in ref.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False)
        step()

    ref.step = clipped_step
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("name", "ours", "ref"), CASES, ids=[c[0] for c in CASES])
def test_equals_clip_grad_norm_then_step(
    name: str, ours: Callable[..., Any], ref: Callable[..., Any], dtype: torch.dtype
) -> None:
    start, grads = random_problem(20, sizes=(1, 7, 4097, 0, 300))
    # Gradients large enough that clipping is active on every step.
    grads = [[g * 3.0 for g in gs] for gs in grads]
    a = leaves(start, dtype)
    opt = ours(a[:3], max_grad_norm=MAX_NORM)
    opt.add_param_group({"params": a[3:]})  # the norm is global over all groups
    b = leaves(start, dtype)
    ref_opt = ref(b[:3])
    ref_opt.add_param_group({"params": b[3:]})
    run_steps(opt, a, grads)
    run_steps(clip_then(ref_opt, MAX_NORM), b, grads)
    tol = CLIPPED_FLOAT64 if dtype == torch.float64 else TRAJECTORY[dtype]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert_close(x.detach(), y.detach(), tol, f"{name} param {i}")
    # The update clipped what it read; p.grad itself is left as it was.
    for p, g in zip(a, grads[-1], strict=True):
        assert torch.equal(p.grad, g.to(dtype))  # type: ignore[arg-type]


def test_below_the_threshold_changes_nothing() -> None:
    start, grads = random_problem(5, sizes=(7, 4097))
    a, b = leaves(start, torch.float64), leaves(start, torch.float64)
    run_steps(Adagrad(a, lr=0.1, max_grad_norm=1e9), a, grads)
    run_steps(torch.optim.Adagrad(b, lr=0.1, foreach=False), b, grads)
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), STEP[torch.float64], "unclipped")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda ps: SGD(ps, lr=0.1, momentum=0.9, max_grad_norm=1.0), torch.optim.SGD),
        (lambda ps: Adagrad(ps, max_grad_norm=1.0), torch.optim.Adagrad),
        (
            lambda ps: RMSprop(ps, momentum=0.5, centered=True, max_grad_norm=1.0),
            torch.optim.RMSprop,
        ),
    ],
    ids=["sgd", "adagrad", "rmsprop"],
)
def test_checkpoint_loads_into_torch(ours: Callable[..., Any], theirs: Any) -> None:
    start, grads = random_problem(3, sizes=(7, 5))
    a = leaves(start, torch.float32)
    opt = ours(a)
    run_steps(opt, a, grads)
    sd = copy.deepcopy(opt.state_dict())
    assert all("max_grad_norm" not in g for g in sd["param_groups"])
    torch_opt = theirs(leaves(start, torch.float32), lr=0.1)
    torch_opt.load_state_dict(sd)
    assert torch_opt.state_dict()["param_groups"] == sd["param_groups"]
    # ... and back, keeping the setting given to the constructor.
    back = ours(leaves(start, torch.float32))
    back.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    assert back.max_grad_norm == 1.0


def test_invalid_and_sparse() -> None:
    p = torch.zeros(3, requires_grad=True)
    for value in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="Invalid max_grad_norm value"):
            SGD([p], lr=0.1, max_grad_norm=value)
    q = torch.zeros(3, requires_grad=True)
    q.grad = torch.sparse_coo_tensor([[0]], [1.0], (3,), check_invariants=True)
    with pytest.raises(RuntimeError, match="sparse"):
        SGD([q], lr=0.1, max_grad_norm=1.0).step()


def _amp_step(opt: Any, params: list[torch.Tensor], grads: list[torch.Tensor], scale: float) -> Any:
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
    scaler.scale(torch.ones(()))  # initialises the scale
    for p, g in zip(params, grads, strict=True):
        p.grad = g.to(p.dtype) * scale
    scaler.step(opt)
    scaler.update()
    return scaler


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "lion"])
def test_amp_unscales_in_kernel_and_skips_inf(name: str) -> None:
    ours, ref = {c[0]: (c[1], c[2]) for c in CASES}[name]
    start, grads = random_problem(2, sizes=(7, 4097))
    scale = 2.0**12
    a, b = leaves(start, torch.float32), leaves(start, torch.float32)
    opt = ours(a, max_grad_norm=MAX_NORM)
    assert opt._step_supports_amp_scaling
    _amp_step(opt, a, grads[0], scale)
    # Reference: unscaled gradients, torch's clipping, then the step.
    run_steps(clip_then(ref(b), MAX_NORM), b, grads[:1])
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float32], f"{name} amp")
    # An inf gradient: the step changes nothing (params, state, step counts).
    params_before = [x.detach().clone() for x in a]
    state_before = copy.deepcopy(opt.state_dict()["state"])
    bad = [g.clone() for g in grads[1]]
    bad[1][17] = float("inf")
    scaler = _amp_step(opt, a, bad, scale)
    assert scaler.get_scale() == scale * scaler.get_backoff_factor()
    for x, before in zip(a, params_before, strict=True):
        assert torch.equal(x.detach(), before)
    state_after = opt.state_dict()["state"]
    for k, entry in state_before.items():
        for key, value in entry.items():
            assert torch.equal(state_after[k][key], value), (name, key)
