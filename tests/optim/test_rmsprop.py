"""gradfuse.optim.RMSprop and functional.rmsprop_ against torch.optim.RMSprop (foreach=False)."""

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
    one_torch_thread,
    state_dict_round_trip,
)

import gradfuse
from conftest import DTYPES
from gradfuse.optim import RMSprop
from tolerances import STEP, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

OPTIONS = list(
    itertools.product(
        [0.99, 0.3],  # alpha (0.3: lerp's large-weight branch for grad_avg)
        [0.0, 0.1],  # weight_decay
        [0.0, 0.9],  # momentum
        [False, True],  # centered
        [False, True],  # maximize
    )
)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("alpha", "weight_decay", "momentum", "centered", "maximize"), OPTIONS)
def test_trajectory(
    dtype: torch.dtype,
    alpha: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    kw = {
        "lr": 0.01,
        "alpha": alpha,
        "weight_decay": weight_decay,
        "momentum": momentum,
        "centered": centered,
        "maximize": maximize,
    }
    # Centered with a short memory in float32 is ill-conditioned (see MEAN_ERROR_FACTOR).
    mean_error = centered and alpha < 0.5 and dtype == torch.float32
    compare_trajectory(
        lambda ps: RMSprop(ps, **kw),
        lambda ps: torch.optim.RMSprop(ps, foreach=False, **kw),
        dtype,
        msg=str(kw),
        mean_error=mean_error,
    )


def test_capturable_on_cpu_fails_like_torch() -> None:
    # torch refuses capturable=True for CPU params at step time, before changing anything
    # (capturable steps run on the CPU through the functional form: test_capturable.py).
    for mod in (torch.optim, gradfuse.optim):
        p = torch.nn.Parameter(torch.randn(3))
        p.grad = torch.randn(3)
        before = p.detach().clone()
        opt = mod.RMSprop([p], lr=0.02, foreach=True, capturable=True)
        with pytest.raises(AssertionError, match="If capturable=True, params and state_steps"):
            opt.step()
        assert torch.equal(p.detach(), before)


def test_eps_tensor_lr_and_flags() -> None:
    compare_paths(
        RMSprop,
        torch.optim.RMSprop,
        [{"lr": torch.tensor(0.02), "eps": 1e-3, "momentum": 0.5}, {"lr": 0.02, "foreach": True}],
    )


def test_many_tensors() -> None:
    sizes = [int(s) for s in torch.randint(0, 300, (200,))]
    kw = {"lr": 0.01, "momentum": 0.9, "centered": True}
    compare_trajectory(
        lambda ps: RMSprop(ps, **kw),
        lambda ps: torch.optim.RMSprop(ps, foreach=False, **kw),
        torch.float64,
        steps=10,
        sizes=sizes,
    )


def test_state_dict_round_trip_and_layout() -> None:
    kw = {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01}
    state_dict_round_trip(
        lambda ps: RMSprop(ps, **kw), lambda ps: torch.optim.RMSprop(ps, foreach=False, **kw)
    )
    p = torch.randn(3, requires_grad=True)
    ours, theirs = RMSprop([p], **kw), torch.optim.RMSprop([p], **kw)
    p.grad = torch.randn(3)
    ours.step()
    assert ours.state_dict()["param_groups"] == theirs.state_dict()["param_groups"]
    assert sorted(ours.state[p]) == ["grad_avg", "momentum_buffer", "square_avg", "step"]
    assert float(ours.state[p]["step"]) == 1.0


@pytest.mark.parametrize(
    "kw",
    [
        {"lr": -1.0},
        {"lr": torch.tensor([0.1, 0.2])},
        {"eps": -1.0},
        {"momentum": -0.5},
        {"weight_decay": -1},
        {"alpha": -0.1},
    ],
    ids=str,
)
def test_constructor_errors_match_torch(kw: dict[str, object]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    assert_same_errors(lambda: RMSprop(p, **kw), lambda: torch.optim.RMSprop(p, **kw))


def test_differentiable_sparse_and_setstate() -> None:
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(NotImplementedError, match="differentiable"):
        RMSprop([p], differentiable=True)
    opt = RMSprop([p], max_grad_norm=1.5)
    p.grad = torch.ones(2)
    opt.step()
    state = opt.__getstate__()
    for key in ("momentum", "centered", "foreach", "maximize", "differentiable", "capturable"):
        del state["param_groups"][0][key]
    state["state"][p]["step"] = 1
    fresh = copy.copy(opt)
    fresh.__setstate__(state)
    group = fresh.param_groups[0]
    assert (group["momentum"], group["centered"], group["capturable"]) == (0, False, False)
    assert torch.is_tensor(fresh.state[p]["step"])
    assert copy.deepcopy(opt).max_grad_norm == 1.5
    q = torch.zeros(3, requires_grad=True)
    q.grad = torch.sparse_coo_tensor([[0]], [1.0], (3,), check_invariants=True)
    with pytest.raises(RuntimeError, match="RMSprop does not support sparse gradients"):
        RMSprop([q]).step()


def test_functional_numpy_matches_torch() -> None:
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal(4097), rng.standard_normal(4097)
    sq, ga, buf = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g.copy())
    kw = {"lr": 0.01, "momentum": 0.9, "centered": True}
    opt = torch.optim.RMSprop([tp], foreach=False, **kw)
    for _ in range(3):
        gradfuse.functional.rmsprop_([p], [g], [sq], [ga], [buf], **kw)
        opt.step()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    with pytest.raises(ValueError, match="grad_avgs"):
        gradfuse.functional.rmsprop_([p], [g], [sq], lr=0.1, centered=True)
