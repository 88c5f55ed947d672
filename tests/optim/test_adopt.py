"""gradfuse.optim.ADOPT and functional.adopt_ against pytorch_optimizer.ADOPT (4.1.0, its
per-param path) and the float64 reference gradfuse.testing.ADOPT (Taniguchi et al. 2024)."""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from _more_helpers import (
    check_grad_scaler_skips_inf,
    compare_trajectory,
    leaves,
    one_torch_thread,
    random_problem,
    run_steps,
)

import gradfuse
from conftest import DTYPES
from gradfuse.optim import ADOPT
from gradfuse.testing import ADOPT as ReferenceADOPT
from tolerances import STEP, TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

po = pytest.importorskip("pytorch_optimizer")


def _theirs(ps: list[torch.Tensor], **kw: Any) -> Any:
    return po.ADOPT(ps, foreach=False, **kw)


# Every option of pytorch_optimizer.ADOPT: weight decay (none, L2, decoupled, fixed), maximize,
# clipping on/off, other betas/eps.
OPTIONS: list[dict[str, Any]] = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "weight_decouple": True},
    {"weight_decay": 0.1, "weight_decouple": True, "fixed_decay": True},
    {"maximize": True, "weight_decay": 0.05},
    {"clip_lambda": None},
    {"betas": (0.8, 0.99), "eps": 1e-3, "lr": 3e-3},
    {"clip_lambda": lambda step: 0.5 + 0.1 * step},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(kw) or "defaults")
def test_trajectory_against_pytorch_optimizer(dtype: torch.dtype, kw: dict[str, Any]) -> None:
    compare_trajectory(lambda ps: ADOPT(ps, **kw), lambda ps: _theirs(ps, **kw), dtype, msg=str(kw))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kw", OPTIONS[:3], ids=lambda kw: ",".join(kw) or "defaults")
def test_low_precision_within_twice_the_reference_error(
    dtype: torch.dtype, kw: dict[str, Any]
) -> None:
    # pytorch_optimizer in the 16-bit dtype and in float64 from the same start: ours (computed
    # in float32, rounded once per stored value) within 2x its error against float64.
    compare_trajectory(lambda ps: ADOPT(ps, **kw), lambda ps: _theirs(ps, **kw), dtype, msg=str(kw))


def test_float64_reference_is_pytorch_optimizer() -> None:
    # gradfuse.testing.ADOPT (used by gradfuse check and bench) is the same algorithm.
    for kw in OPTIONS:
        compare_trajectory(
            lambda ps, kw=kw: ReferenceADOPT(ps, **kw),  # type: ignore[misc]
            lambda ps, kw=kw: _theirs(ps, **kw),  # type: ignore[misc]
            torch.float64,
            steps=20,
            msg=str(kw),
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_first_step_only_initialises_the_second_moment(dtype: torch.dtype) -> None:
    p = torch.randn(4097, dtype=torch.float64).to(dtype).requires_grad_()
    start = p.detach().clone()
    g = torch.randn(4097, dtype=torch.float64).to(dtype)
    p.grad = g.clone()
    opt = ADOPT([p], lr=0.1)
    opt.step()
    assert torch.equal(p.detach(), start)
    state = opt.state[p]
    assert float(state["step"]) == 1.0
    assert opt.param_groups[0]["step"] == 1
    assert torch.equal(state["exp_avg"], torch.zeros_like(p))
    assert_close(
        state["exp_avg_sq"].double(), (g.float() ** 2).to(dtype).double(), STEP[torch.float32]
    )
    # Step 2 normalises by the first step's v and clips to 2 ** 0.25.
    g2 = torch.randn(4097, dtype=torch.float64).to(dtype)
    p.grad = g2.clone()
    opt.step()
    if dtype == torch.float64:
        n = (g2 / g.abs().clamp(min=1e-6)).clamp(-(2**0.25), 2**0.25)
        assert_close(p.detach(), start - 0.1 * 0.1 * n, STEP[torch.float64])


def test_param_groups_and_checkpoints_both_ways() -> None:
    # Groups with their own options; a mid-run checkpoint moves between gradfuse and
    # pytorch_optimizer (per-param steps <-> group steps) and both continue alike.
    start, grads = random_problem(12)

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [
            {"params": ps[:2]},
            {"params": ps[2:], "weight_decay": 0.1, "weight_decouple": True, "lr": 2e-3},
        ]

    makers = (lambda ps: ADOPT(groups(ps)), lambda ps: _theirs(groups(ps)))
    for make_a, make_b in (makers, makers[::-1]):
        a = leaves(start, torch.float64)
        opt_a = make_a(a)
        run_steps(opt_a, a, grads[:6])
        sd = copy.deepcopy(opt_a.state_dict())
        b = [x.detach().clone().requires_grad_() for x in a]
        opt_b = make_b(b)
        opt_b.load_state_dict(sd)
        run_steps(opt_a, a, grads[6:])
        run_steps(opt_b, b, grads[6:])
        for x, y in zip(a, b, strict=True):
            assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "after load")
    assert sorted(opt_a.state[a[0]]) == ["exp_avg", "exp_avg_sq", "step"] or sorted(
        opt_b.state[b[0]]
    ) == ["exp_avg", "exp_avg_sq", "step"]


def test_grad_scaler_inf_changes_nothing() -> None:
    check_grad_scaler_skips_inf(
        lambda ps: ADOPT(ps, lr=1e-2, weight_decay=0.1, weight_decouple=True),
        "weight",
        (0, 0),
        float("inf"),
    )


@pytest.mark.parametrize(
    "kw",
    [{"lr": -1.0}, {"betas": (1.0, 0.9)}, {"betas": (0.9, -0.1)}, {"weight_decay": -1.0},
     {"eps": -1.0}],
    ids=str,
)  # fmt: skip
def test_constructor_errors_are_pytorch_optimizers(kw: dict[str, Any]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs:  # noqa: PT011 - compared below
        _theirs(p, **kw)
    with pytest.raises(ValueError, match="must be") as ours:
        ADOPT(p, **kw)
    assert str(ours.value) == str(theirs.value)


def test_unsupported_options_and_pickling() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(NotImplementedError, match="cautious"):
        ADOPT(p, cautious=True)
    with pytest.raises(TypeError, match="clip_lambda"):
        ADOPT(p, clip_lambda=3.0)  # type: ignore[arg-type]
    opt = ADOPT(p, clip_lambda=None, max_grad_norm=2.0)
    clone = copy.deepcopy(opt)
    assert clone.clip_lambda is None
    assert clone.max_grad_norm == 2.0
    assert str(opt) == "ADOPT"


def test_functional_numpy_and_errors_write_nothing() -> None:
    rng = np.random.default_rng(3)
    p, g = rng.standard_normal(4097), rng.standard_normal(4097)
    m, v = np.zeros_like(p), np.zeros_like(p)
    steps = [0]
    tp = torch.from_numpy(p.copy()).requires_grad_()
    ref = ReferenceADOPT([tp], lr=1e-2, weight_decay=0.5)
    for _ in range(3):
        tp.grad = torch.from_numpy(g.copy())
        gradfuse.functional.adopt_([p], [g], [m], [v], state_steps=steps, lr=1e-2, weight_decay=0.5)
        ref.step()
    assert steps == [3]
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(v), ref.state[tp]["exp_avg_sq"], STEP[torch.float64], "v")
    before = [x.copy() for x in (p, m, v)]
    bad: list[dict[str, Any]] = [
        {"exp_avgs": [np.zeros(3)]},
        {"lr": -1.0},
        {"clip_lambda": "x"},
        {"exp_avg_sqs": [v.astype(np.float32)]},
    ]
    for kw in bad:
        args: dict[str, Any] = {"exp_avgs": [m], "exp_avg_sqs": [v], **kw}
        with pytest.raises((ValueError, TypeError)):
            gradfuse.functional.adopt_(
                [p], [g], args["exp_avgs"], args["exp_avg_sqs"], state_steps=steps,
                **{k: x for k, x in kw.items() if k not in ("exp_avgs", "exp_avg_sqs")},
            )  # fmt: skip
        assert steps == [3]
        for x, y in zip((p, m, v), before, strict=True):
            assert np.array_equal(x, y)


def test_default_clip_is_fourth_root() -> None:
    from gradfuse.functional._adopt import default_clip_lambda

    assert default_clip_lambda(16) == 2.0
    assert math.isclose(default_clip_lambda(2), 2**0.25)


def test_many_tensors_options_grid_short() -> None:
    # Every combination of the flags over 150 odd-sized tensors, a few steps (one native call
    # per group, the flag instances of the dispatch).
    sizes = [int(s) for s in torch.randint(0, 300, (150,))]
    for wd, decouple, maximize in itertools.product([0.0, 0.1], [False, True], [False, True]):
        kw = {"weight_decay": wd, "weight_decouple": decouple, "maximize": maximize}
        compare_trajectory(
            lambda ps, kw=kw: ADOPT(ps, **kw),  # type: ignore[misc]
            lambda ps, kw=kw: _theirs(ps, **kw),  # type: ignore[misc]
            torch.float32,
            steps=4,
            sizes=sizes,
            msg=str(kw),
        )
