"""gradfuse.optim.Adagrad and functional.adagrad_ against torch.optim.Adagrad (foreach=False)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from _more_helpers import (
    assert_same_errors,
    compare_paths,
    compare_trajectory,
    leaves,
    one_torch_thread,
    random_problem,
    run_steps,
    state_dict_round_trip,
)

import gradfuse
from conftest import DTYPES
from gradfuse.optim import Adagrad
from tolerances import STEP, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

OPTIONS = list(
    itertools.product(
        [0.0, 0.05],  # lr_decay
        [0.0, 0.1],  # weight_decay
        [0.0, 0.3],  # initial_accumulator_value
        [False, True],  # maximize
    )
)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("lr_decay", "weight_decay", "init", "maximize"), OPTIONS)
def test_trajectory(
    dtype: torch.dtype, lr_decay: float, weight_decay: float, init: float, maximize: bool
) -> None:
    kw = {
        "lr": 0.05,
        "lr_decay": lr_decay,
        "weight_decay": weight_decay,
        "initial_accumulator_value": init,
        "maximize": maximize,
    }
    compare_trajectory(
        lambda ps: Adagrad(ps, **kw),
        lambda ps: torch.optim.Adagrad(ps, foreach=False, **kw),
        dtype,
        msg=str(kw),
    )


def test_eps_tensor_lr_and_flags() -> None:
    compare_paths(
        Adagrad,
        torch.optim.Adagrad,
        [
            {"lr": torch.tensor(0.03), "eps": 1e-3},
            # A float32 tensor lr: torch divides by the decay in float32 (clr rounded to it).
            {"lr": torch.tensor(0.03), "lr_decay": 0.01},
            {"lr": 0.03, "foreach": True},
            {"lr": 0.03, "fused": True},
        ],
    )


def test_many_tensors_and_mixed_dtypes() -> None:
    sizes = [int(s) for s in torch.randint(0, 300, (200,))]
    compare_trajectory(
        lambda ps: Adagrad(ps, lr=0.05, weight_decay=0.01),
        lambda ps: torch.optim.Adagrad(ps, lr=0.05, weight_decay=0.01, foreach=False),
        torch.float32,
        steps=10,
        sizes=sizes,
    )
    start, grads = random_problem(5, sizes=(33, 65, 7))
    dtypes = (torch.float32, torch.float64, torch.float32)
    ours = [x.to(d).requires_grad_() for x, d in zip(start, dtypes, strict=True)]
    theirs = [x.to(d).requires_grad_() for x, d in zip(start, dtypes, strict=True)]
    run_steps(Adagrad(ours, lr=0.1), ours, grads)
    run_steps(torch.optim.Adagrad(theirs, lr=0.1, foreach=False), theirs, grads)
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a.detach(), b.detach(), STEP[a.dtype], "mixed dtypes")


def test_state_dict_round_trip_and_layout() -> None:
    kw = {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1}
    state_dict_round_trip(
        lambda ps: Adagrad(ps, **kw), lambda ps: torch.optim.Adagrad(ps, foreach=False, **kw)
    )
    p = [torch.randn(3, requires_grad=True)]
    ours, theirs = Adagrad(p, max_grad_norm=1.0), torch.optim.Adagrad(p)
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
    assert sorted(ours.state[p[0]]) == sorted(theirs.state[p[0]]) == ["step", "sum"]


def test_param_group_added_later() -> None:
    start, grads = random_problem(4, sizes=(5, 9))
    ours, theirs = leaves(start, torch.float64), leaves(start, torch.float64)
    oa = Adagrad(ours[:1], lr=0.1, initial_accumulator_value=0.2)
    ob = torch.optim.Adagrad(theirs[:1], lr=0.1, initial_accumulator_value=0.2, foreach=False)
    oa.add_param_group({"params": ours[1:], "lr": 0.05})
    ob.add_param_group({"params": theirs[1:], "lr": 0.05})
    run_steps(oa, ours, grads)
    run_steps(ob, theirs, grads)
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a.detach(), b.detach(), STEP[torch.float64], "added group")


@pytest.mark.parametrize(
    "kw",
    [
        {"lr": -1.0},
        {"lr": torch.tensor([0.1, 0.2])},
        {"lr_decay": -0.1},
        {"weight_decay": -1},
        {"initial_accumulator_value": -1},
        {"eps": -1e-3},
        {"fused": True, "foreach": True},
    ],
    ids=str,
)
def test_constructor_errors_match_torch(kw: dict[str, object]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    assert_same_errors(lambda: Adagrad(p, **kw), lambda: torch.optim.Adagrad(p, **kw))


def test_differentiable_and_setstate() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(NotImplementedError, match="differentiable"):
        Adagrad(p, differentiable=True)
    opt = Adagrad(p, max_grad_norm=2.0)
    state = opt.__getstate__()
    for group in state["param_groups"]:
        for key in ("foreach", "maximize", "differentiable", "fused"):
            del group[key]
    state["state"][p[0]]["step"] = 3  # an old checkpoint's plain number
    fresh = copy.copy(opt)
    fresh.__setstate__(state)
    assert fresh.param_groups[0]["maximize"] is False
    assert fresh.param_groups[0]["fused"] is None
    assert torch.is_tensor(fresh.state[p[0]]["step"])
    assert float(fresh.state[p[0]]["step"]) == 3.0
    assert copy.deepcopy(opt).max_grad_norm == 2.0


def test_sparse_gradients_take_torchs_path() -> None:
    ours = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    grad = torch.sparse_coo_tensor(
        [[0, 4]], torch.randn(2, 3, dtype=torch.float64), (6, 3), check_invariants=True
    )
    ours.grad, theirs.grad = grad.clone(), grad.clone()
    with torch.sparse.check_sparse_tensor_invariants(enable=True):
        Adagrad([ours], lr=0.1).step()
        torch.optim.Adagrad([theirs], lr=0.1, foreach=False).step()
    assert_close(ours.detach(), theirs.detach(), STEP[torch.float64], "sparse")


def test_functional_numpy_matches_torch() -> None:
    rng = np.random.default_rng(3)
    p = rng.standard_normal(4097)
    g = rng.standard_normal(4097)
    s = np.full_like(p, 0.1)
    steps: list[object] = [0]
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g.copy())
    opt = torch.optim.Adagrad(
        [tp], lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1, foreach=False
    )
    for _ in range(3):
        gradfuse.functional.adagrad_([p], [g], [s], steps, lr=0.1, lr_decay=0.1)
        opt.step()
    assert steps == [3.0]
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(s), opt.state[tp]["sum"], STEP[torch.float64], "numpy sum")


def test_failed_call_writes_nothing() -> None:
    p = torch.randn(5)
    s = torch.zeros(5)
    steps = [torch.tensor(0.0)]
    before = p.clone()
    with pytest.raises(ValueError, match="shape"):
        gradfuse.functional.adagrad_([p], [torch.randn(4)], [s], steps, lr=0.1)
    assert torch.equal(p, before)
    assert float(steps[0]) == 0.0
