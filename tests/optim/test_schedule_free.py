"""gradfuse.optim.ScheduleFreeAdamW / ScheduleFreeSGD and their functionals against the
``schedulefree`` package (AdamWScheduleFree, SGDScheduleFree; Defazio et al. 2024), and the
float64 reference gradfuse.testing.ScheduleFree* (the same algorithm in plain torch ops)."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import schedulefree
import torch
from _more_helpers import assert_same_errors, leaves, one_torch_thread, random_problem

import gradfuse
from gradfuse.functional import (
    schedule_free_adamw_,
    schedule_free_eval_,
    schedule_free_sgd_,
    schedule_free_train_,
)
from gradfuse.optim import ScheduleFreeAdamW, ScheduleFreeSGD
from gradfuse.testing import ScheduleFreeAdamW as RefAdamW
from gradfuse.testing import ScheduleFreeSGD as RefSGD
from tolerances import (
    CLIPPED_FLOAT64,
    STEP,
    TRAJECTORY,
    assert_close,
    assert_low_precision,
)

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

OURS = {"adamw": ScheduleFreeAdamW, "sgd": ScheduleFreeSGD}
PACKAGE = {"adamw": schedulefree.AdamWScheduleFree, "sgd": schedulefree.SGDScheduleFree}
FLOAT64_REF = {"adamw": RefAdamW, "sgd": RefSGD}

# Every option of the reference, alone and together (lr 0: ckp1's ZeroDivisionError branch).
ADAMW_OPTIONS: list[dict[str, Any]] = [
    {},
    {"weight_decay": 0.1},
    {"warmup_steps": 10},
    {"r": 0.5, "weight_lr_power": 0.0},
    {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05, "warmup_steps": 20,
     "r": 1.0, "weight_lr_power": 1.0},
    {"lr": 0.0},
]  # fmt: skip
SGD_OPTIONS: list[dict[str, Any]] = [
    {"lr": 0.1},
    {"lr": 0.1, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.5, "warmup_steps": 10},
    {"lr": 0.1, "r": 0.5, "weight_lr_power": 0.0},
    {"lr": 0.02, "momentum": 0.95, "weight_decay": 0.01, "warmup_steps": 30, "r": 2.0,
     "weight_lr_power": 1.0},
    {"lr": 0.0},
]  # fmt: skip
CASES = [("adamw", kw) for kw in ADAMW_OPTIONS] + [("sgd", kw) for kw in SGD_OPTIONS]
# The optimizer is switched to eval (x) before these steps, compared there, and switched back.
EVAL_AT = (1, 37, 60)
GROUP_KEYS = ("k", "lr_max", "weight_sum", "scheduled_lr", "train_mode")


def _run(
    opt: Any,
    params: list[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    sign: float = 1.0,
    on_eval: Callable[[int], None] | None = None,
) -> None:
    """train(), then the steps, switching to eval and back before EVAL_AT; ends in eval."""
    opt.train()
    for i, step_grads in enumerate(grads):
        if i in EVAL_AT:
            opt.eval()
            if on_eval is not None:
                on_eval(i)
            opt.train()
        for p, g in zip(params, step_grads, strict=True):
            p.grad = (sign * g).to(p.dtype).clone()  # fresh: the package divides p.grad in place
        opt.step()
    opt.eval()


def _trajectories(
    name: str, kw: dict[str, Any], dtype: torch.dtype, steps: int = 100, maximize: bool = False
) -> None:
    start, grads = random_problem(steps)
    ours_p, theirs_p = leaves(start, dtype), leaves(start, dtype)
    ours = OURS[name](ours_p, maximize=maximize, **kw)
    theirs = PACKAGE[name](theirs_p, **kw)
    seen: list[list[torch.Tensor]] = []
    _run(ours, ours_p, grads, on_eval=lambda i: seen.append([p.detach().clone() for p in ours_p]))
    theirs_seen: list[list[torch.Tensor]] = []
    _run(
        theirs,
        theirs_p,
        grads,
        sign=-1.0 if maximize else 1.0,
        on_eval=lambda i: theirs_seen.append([p.detach().clone() for p in theirs_p]),
    )
    tol = TRAJECTORY[dtype]
    evals = [i for i in EVAL_AT if i < steps]
    for at, a_list, b_list in zip(evals, seen, theirs_seen, strict=True):
        for j, (a, b) in enumerate(zip(a_list, b_list, strict=True)):
            assert_close(a, b, tol, f"{name} {kw} x before step {at}, param {j}")
    for j, (a, b) in enumerate(zip(ours_p, theirs_p, strict=True)):
        assert_close(a.detach(), b.detach(), tol, f"{name} {kw} final x, param {j}")
        sa, sb = ours.state[a], theirs.state[b]
        assert sorted(sa) == sorted(sb)
        for key in sb:
            assert_close(sa[key], sb[key], tol, f"{name} {kw} state {key}, param {j}")
    for ga, gb in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert {k: ga[k] for k in GROUP_KEYS} == {k: gb[k] for k in GROUP_KEYS}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("name", "kw"), CASES, ids=str)
def test_trajectory_against_schedulefree(name: str, kw: dict[str, Any], dtype: torch.dtype) -> None:
    _trajectories(name, kw, dtype)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_maximize_is_the_negated_gradient(name: str) -> None:
    kw = {"weight_decay": 0.1, **({"lr": 0.1} if name == "sgd" else {})}
    _trajectories(name, kw, torch.float64, steps=30, maximize=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("name", "kw"), [CASES[1], CASES[4], CASES[7], CASES[10]], ids=str)
def test_low_precision_within_twice_the_references_error(
    name: str, kw: dict[str, Any], dtype: torch.dtype
) -> None:
    # Ours and the package in `dtype`, both against the package in float64 from the same
    # (rounded) start and gradients: ours may be off by at most 2x the package's own error.
    start, grads = random_problem(100)
    grads = [[g.to(dtype).double() for g in gs] for gs in grads]
    start = [x.to(dtype).double() for x in start]
    runs = []
    for make, dt in ((OURS[name], dtype), (PACKAGE[name], dtype), (PACKAGE[name], torch.float64)):
        ps = leaves(start, dt)
        _run(make(ps, **kw), ps, grads)
        runs.append(torch.cat([p.detach().double().reshape(-1) for p in ps]))
    ours, theirs, ref = runs
    assert torch.isfinite(ours).all()
    keep = torch.isfinite(theirs)  # float16's eps underflow can give the package 0/0
    assert_low_precision(ours[keep], theirs[keep], ref[keep], f"{name} {kw} {dtype}")


@pytest.mark.parametrize(("name", "kw"), [CASES[4], CASES[10]], ids=str)
def test_float64_reference_is_the_package(name: str, kw: dict[str, Any]) -> None:
    # gradfuse.testing's reference (used by `gradfuse check` and the bench) is the package's
    # algorithm: the same trajectory in float64.
    start, grads = random_problem(40)
    a, b = leaves(start, torch.float64), leaves(start, torch.float64)
    _run(FLOAT64_REF[name](a, **kw), a, grads)
    _run(PACKAGE[name](b, **kw), b, grads)
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "reference vs package")


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_param_groups_tensor_lr_and_params_without_grad(name: str) -> None:
    start, grads = random_problem(30, sizes=(7, 4097, 33, 5))
    for gs in grads[::3]:
        gs[2] = None  # type: ignore[call-overload]  # some steps leave a param without gradient
    lr = 0.01 if name == "adamw" else 0.1
    runs = []
    for make, tensor_lr in ((OURS[name], True), (PACKAGE[name], False)):
        ps = leaves(start, torch.float64)
        groups = [
            {
                "params": ps[:2],
                "lr": torch.tensor(lr, dtype=torch.float64) if tensor_lr else lr,
                "warmup_steps": 5,
            },
            {"params": ps[2:3], "lr": 2 * lr, "r": 1.0, "weight_decay": 0.1},
            {"params": ps[3:], "lr": 0.5 * lr},
        ]
        opt = make(groups)
        opt.train()
        for i, gs in enumerate(grads):
            if i == 12:
                opt.eval()
                opt.train()
            for p, g in zip(ps, gs, strict=True):
                p.grad = None if g is None else g.clone()
            if i == 20:
                ps[3].grad = None
            opt.step()
        opt.eval()
        runs.append((ps, opt))
    (a, oa), (b, ob) = runs
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "groups")
    for ga, gb in zip(oa.param_groups, ob.param_groups, strict=True):
        assert {k: ga[k] for k in GROUP_KEYS} == {k: gb[k] for k in GROUP_KEYS}


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_state_dict_interchange_with_the_package(name: str, mode: str) -> None:
    # A checkpoint taken mid-run (in eval mode, as the package asks, or in train mode) moves
    # ours -> package and package -> ours, and both continue alike.
    kw: dict[str, Any] = {"warmup_steps": 4, "weight_decay": 0.01, "r": 0.5}
    if name == "sgd":
        kw["lr"] = 0.1
    start, grads = random_problem(16)
    for make_a, make_b in ((OURS[name], PACKAGE[name]), (PACKAGE[name], OURS[name])):
        a = leaves(start, torch.float64)
        opt_a = make_a(a, **kw)
        _run(opt_a, a, grads[:8])
        if mode == "train":
            opt_a.train()
        sd = copy.deepcopy(opt_a.state_dict())
        b = [x.detach().clone().requires_grad_() for x in a]
        opt_b = make_b(b, **kw)
        opt_b.load_state_dict(sd)
        assert sorted(opt_b.state[b[0]]) == sorted(opt_a.state[a[0]])
        for opt, ps in ((opt_a, a), (opt_b, b)):
            _run(opt, ps, grads[8:])
        for x, y in zip(a, b, strict=True):
            assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], f"{make_a} -> {make_b}")
        assert {k: opt_a.param_groups[0][k] for k in GROUP_KEYS} == {
            k: opt_b.param_groups[0][k] for k in GROUP_KEYS
        }


def test_checkpoint_pickle_and_defaults() -> None:
    p = [torch.randn(5, requires_grad=True)]
    ours, theirs = ScheduleFreeAdamW(p), schedulefree.AdamWScheduleFree(p)
    for key, value in theirs.defaults.items():
        assert ours.defaults[key] == value, key
    sgd, sgd_ref = ScheduleFreeSGD(p), schedulefree.SGDScheduleFree(p)
    for key, value in sgd_ref.defaults.items():
        assert sgd.defaults[key] == value, key
    opt = ScheduleFreeSGD(p, lr=0.1, max_grad_norm=1.0)
    opt.train()
    p[0].grad = torch.randn(5)
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.max_grad_norm == 1.0
    assert clone.param_groups[0]["k"] == 1
    state = opt.__getstate__()
    del state["param_groups"][0]["maximize"]  # a checkpoint of the package lacks it
    fresh = copy.copy(opt)
    fresh.__setstate__(state)
    assert fresh.param_groups[0]["maximize"] is False


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_step_in_eval_mode_raises_as_the_package(name: str) -> None:
    p = torch.randn(7, requires_grad=True)
    p.grad = torch.randn(7)
    ours = OURS[name]([p], lr=0.1)
    before = p.detach().clone()
    assert_same_errors(ours.step, PACKAGE[name]([p.detach().clone().requires_grad_()]).step)
    with pytest.raises(Exception, match="not in train mode when step is called"):
        ours.step()
    assert torch.equal(p.detach(), before)
    assert ours.state[p] == {}
    assert ours.param_groups[0]["k"] == 0


@pytest.mark.parametrize(
    "kw",
    [{"lr": -1.0}, {"weight_decay": -0.1}, {"momentum": 0.0}, {"momentum": 1.0}],
    ids=str,
)
def test_sgd_constructor_errors_are_the_packages(kw: dict[str, Any]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    assert_same_errors(
        lambda: ScheduleFreeSGD(p, **kw), lambda: schedulefree.SGDScheduleFree(p, **kw)
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"eps": -1.0}, "Invalid epsilon value: -1.0"),
        ({"betas": (1.0, 0.99)}, r"Invalid beta parameter at index 0: 1.0"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ],
    ids=str,
)
def test_adamw_constructor_errors(kw: dict[str, Any], message: str) -> None:
    # The package checks nothing; ours refuses what torch.optim.AdamW refuses, in its words.
    p = [torch.zeros(2, requires_grad=True)]
    assert_same_errors(lambda: ScheduleFreeAdamW(p, **kw), lambda: torch.optim.AdamW(p, **kw))
    with pytest.raises(ValueError, match=message):
        ScheduleFreeAdamW(p, **kw)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_switch_is_idempotent_and_skips_params_without_state(name: str) -> None:
    a, b = torch.randn(4097, requires_grad=True), torch.randn(7, requires_grad=True)
    opt = OURS[name]([a, b], lr=0.1)
    ref = PACKAGE[name]([x.detach().clone().requires_grad_() for x in (a, b)], lr=0.1)
    ref_params = ref.param_groups[0]["params"]
    b0 = b.detach().clone()
    opt.train()
    opt.train()  # already in train mode: nothing
    ref.train()
    for _ in range(3):
        a.grad = torch.randn(4097)
        ref_params[0].grad = a.grad.clone()
        opt.step()
        ref.step()
    for _ in range(2):
        opt.eval()  # the second call does nothing
    ref.eval()
    assert torch.equal(b.detach(), b0)  # never stepped: no z, not moved
    assert_close(a.detach(), ref_params[0].detach(), TRAJECTORY[torch.float32], "eval twice")
    opt.train()
    ref.train()
    assert_close(a.detach(), ref_params[0].detach(), TRAJECTORY[torch.float32], "train again")


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_grad_scaler_with_injected_inf(name: str) -> None:
    # Under GradScaler the update unscales in its kernel; a step with an inf gradient changes
    # nothing at all: params, z, exp_avg_sq and the group's k / lr_max / weight_sum, as the
    # package's skipped step() does.
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))]
    models.append(copy.deepcopy(models[0]))
    kw = {"lr": 0.01, "warmup_steps": 3} if name == "adamw" else {"lr": 0.05, "warmup_steps": 3}
    ours = OURS[name](models[0].parameters(), **kw)
    theirs = PACKAGE[name](models[1].parameters(), **kw)
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2) for _ in "ab"]
    for opt in (ours, theirs):
        opt.train()
    for step in range(8):
        x = torch.randn(16, 6)
        for model, opt, scaler in zip(models, (ours, theirs), scalers, strict=True):
            opt.zero_grad()
            scaler.scale(model(x).pow(2).mean()).backward()
            if step in (0, 4):
                next(model.parameters()).grad[0, 0] = float("inf")
        before = pickle.dumps((ours.state_dict(), [p.detach() for p in models[0].parameters()]))
        for opt, scaler in zip((ours, theirs), scalers, strict=True):
            scaler.step(opt)
            scaler.update()
        if step == 4:
            after = pickle.dumps((ours.state_dict(), [p.detach() for p in models[0].parameters()]))
            assert after == before
        for pa, pb in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert_close(pa.detach(), pb.detach(), TRAJECTORY[torch.float32], f"step {step}")
    assert {k: ours.param_groups[0][k] for k in GROUP_KEYS} == {
        k: theirs.param_groups[0][k] for k in GROUP_KEYS
    }


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_max_grad_norm_is_clip_then_step(name: str) -> None:
    start, grads = random_problem(10, sizes=(7, 4097))
    a, b = leaves(start, torch.float64), leaves(start, torch.float64)
    kw = {"lr": 0.1} if name == "sgd" else {}
    ours = OURS[name](a, max_grad_norm=5.0, **kw)
    theirs = PACKAGE[name](b, **kw)
    ours.train()
    theirs.train()
    for gs in grads:
        for p, q, g in zip(a, b, gs, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        torch.nn.utils.clip_grad_norm_(b, 5.0)
        theirs.step()
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), CLIPPED_FLOAT64, "max_grad_norm")


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_master_weights_track_the_float32_run_exactly(name: str) -> None:
    # bfloat16 params with float32 master copies and float32 state, fed values that bfloat16
    # holds exactly, compute what a float32 run computes: the masters equal its params bit for
    # bit (through the train/eval switches too), and the params are their rounding.
    start, grads = random_problem(20, sizes=(7, 4097))
    start = [x.to(torch.bfloat16).double() for x in start]
    grads = [[g.to(torch.bfloat16).double() for g in gs] for gs in grads]
    kw = {"lr": 0.1, "weight_decay": 0.01} if name == "sgd" else {"weight_decay": 0.01}
    low = leaves(start, torch.bfloat16)
    full = leaves(start, torch.float32)
    opt_low = OURS[name](low, master_weights=True, state_dtype=torch.float32, **kw)
    opt_full = OURS[name](full, **kw)
    _run(opt_low, low, grads)
    _run(opt_full, full, grads)
    for p, q in zip(low, full, strict=True):
        master = opt_low.state[p]["master_param"]
        assert torch.equal(master, q.detach())
        assert torch.equal(p.detach(), q.detach().to(torch.bfloat16))
        assert torch.equal(opt_low.state[p]["z"], opt_full.state[q]["z"])


def test_functional_numpy_and_bookkeeping() -> None:
    rng = np.random.default_rng(3)
    p, z = rng.standard_normal(4097), None
    z = p.copy()
    v = np.zeros_like(p)
    tp = torch.from_numpy(p.copy()).requires_grad_()
    ref = RefAdamW([tp], lr=0.01, warmup_steps=2, weight_decay=0.1)
    ref.train()
    k, lr_max, weight_sum = 0, -1.0, 0.0
    for _ in range(4):
        g = rng.standard_normal(4097)
        out = schedule_free_adamw_(
            [p], [g], [z], [v], k=k, lr_max=lr_max, weight_sum=weight_sum, lr=0.01,
            warmup_steps=2, weight_decay=0.1,
        )  # fmt: skip
        assert out is not None
        k, lr_max, weight_sum = out.k, out.lr_max, out.weight_sum
        tp.grad = torch.from_numpy(g)
        ref.step()
        group = ref.param_groups[0]
        assert (out.k, out.scheduled_lr, out.lr_max, out.weight_sum) == (
            group["k"], group["scheduled_lr"], group["lr_max"], group["weight_sum"],
        )  # fmt: skip
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy y")
    assert_close(torch.from_numpy(z), ref.state[tp]["z"], STEP[torch.float64], "numpy z")
    schedule_free_eval_([p], [z], beta1=0.9)
    ref.eval()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy x")
    schedule_free_train_([p], [z], beta1=0.9)
    ref.train()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy y again")


def test_functional_found_inf_returns_none_and_writes_nothing() -> None:
    p, g, z = torch.randn(7), torch.randn(7), torch.randn(7)
    before = (p.clone(), z.clone())
    out = schedule_free_sgd_(
        [p], [g], [z], k=3, lr_max=0.1, weight_sum=0.5, lr=0.1,
        found_inf=torch.ones(1), grad_scale=torch.full((1,), 2.0),
    )  # fmt: skip
    assert out is None
    assert torch.equal(p, before[0])
    assert torch.equal(z, before[1])


def test_functional_errors_write_nothing() -> None:
    p, g, z, v = (torch.randn(7) for _ in range(4))
    kept = [x.clone() for x in (p, z, v)]
    base: dict[str, Any] = {"k": 0, "lr_max": -1.0, "weight_sum": 0.0}
    with pytest.raises(ValueError, match="one entry of zs per entry of params"):
        schedule_free_adamw_([p], [g], [], [v], **base)
    with pytest.raises(TypeError, match=r"zs\[0\]"):
        schedule_free_adamw_([p], [g], [z.double()], [v], **base)
    with pytest.raises(TypeError, match="k must be an int"):
        schedule_free_adamw_([p], [g], [z], [v], **{**base, "k": 1.5})
    with pytest.raises(ValueError, match="k must be >= 0"):
        schedule_free_sgd_([p], [g], [z], **{**base, "k": -1})
    with pytest.raises(TypeError, match="lr: expected a number"):
        schedule_free_sgd_([p], [g], [z], **base, lr="fast")
    with pytest.raises(ValueError, match="beta1"):
        schedule_free_eval_([p], [z], beta1=0.0)
    with pytest.raises(ValueError, match=r"zs\[0\]"):
        schedule_free_train_([p], [p[:7]], beta1=0.9)  # z aliases its param
    for x, y in zip((p, z, v), kept, strict=True):
        assert torch.equal(x, y)


def test_empty_and_gradless_steps_keep_the_bookkeeping_in_step() -> None:
    # A group whose params have no gradient still advances k / weight_sum, as the package's.
    p = torch.randn(3, requires_grad=True)
    e = torch.zeros(0, requires_grad=True)
    ours, theirs = ScheduleFreeAdamW([p, e]), schedulefree.AdamWScheduleFree([p.detach().clone()])
    ours.train()
    theirs.train()
    for _ in range(3):
        ours.step()
        theirs.step()
    assert {k: ours.param_groups[0][k] for k in GROUP_KEYS} == {
        k: theirs.param_groups[0][k] for k in GROUP_KEYS
    }
    e.grad = torch.zeros(0)
    ours.step()
    assert ours.state[e]["z"].shape == (0,)


def test_exports() -> None:
    assert gradfuse.optim.ScheduleFreeAdamW is ScheduleFreeAdamW
    assert "ScheduleFreeSGD" in gradfuse.optim.__all__
    assert "schedule_free_adamw_" in gradfuse.functional.__all__


@pytest.mark.parametrize(
    "policy",
    [{"kahan": True}, {"master_weights": True}, {"rounding": "stochastic"}],
    ids=str,
)
@pytest.mark.parametrize(("name", "kw"), [CASES[1], CASES[7]], ids=str)
def test_bfloat16_policies_within_twice_the_references_error(
    name: str, kw: dict[str, Any], policy: dict[str, Any]
) -> None:
    # The precision policies act on the steps and on the train/eval switches (both are param
    # updates of one rule engine): bfloat16 params with each policy against the package in
    # bfloat16, both judged by their error against the package in float64.
    start, grads = random_problem(100)
    grads = [[g.to(torch.bfloat16).double() for g in gs] for gs in grads]
    start = [x.to(torch.bfloat16).double() for x in start]
    runs = []
    for make, dt, extra in (
        (OURS[name], torch.bfloat16, policy),
        (PACKAGE[name], torch.bfloat16, {}),
        (PACKAGE[name], torch.float64, {}),
    ):
        ps = leaves(start, dt)
        _run(make(ps, **kw, **extra), ps, grads)
        runs.append(torch.cat([p.detach().double().reshape(-1) for p in ps]))
    ours, theirs, ref = runs
    assert torch.isfinite(ours).all()
    assert_low_precision(ours, theirs, ref, f"{name} {kw} {policy}")
