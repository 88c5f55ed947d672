"""gradfuse.optim.Lion and functional.lion_ against the reference written from the paper
(Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), which is
gradfuse.testing.Lion."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from _more_helpers import (
    assert_same_errors,
    compare_trajectory,
    leaves,
    one_torch_thread,
    random_problem,
    run_steps,
)

import gradfuse
from conftest import DTYPES
from gradfuse.optim import Lion
from gradfuse.testing import Lion as ReferenceLion
from tolerances import STEP, TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


OPTIONS = list(itertools.product([0.0, 0.1], [False, True], [(0.9, 0.99), (0.95, 0.98)]))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("weight_decay", "maximize", "betas"), OPTIONS)
def test_trajectory_against_paper(
    dtype: torch.dtype, weight_decay: float, maximize: bool, betas: tuple[float, float]
) -> None:
    kw: dict[str, Any] = {
        "lr": 3e-3,
        "betas": betas,
        "weight_decay": weight_decay,
        "maximize": maximize,
    }
    compare_trajectory(
        lambda ps: Lion(ps, **kw), lambda ps: ReferenceLion(ps, **kw), dtype, msg=str(kw)
    )


def test_sign_of_zero_is_zero() -> None:
    # m starts at zero, so c = (1 - beta1) * g: a zero gradient gives c = 0 and no move.
    p = torch.randn(4097, dtype=torch.float64, requires_grad=True)
    start = p.detach().clone()
    g = torch.randn(4097, dtype=torch.float64)
    zero = torch.rand(4097) < 0.3
    g[zero] = 0.0
    p.grad = g
    Lion([p], lr=0.1).step()
    assert torch.equal(p.detach()[zero], start[zero])
    assert_close(p.detach()[~zero], start[~zero] - 0.1 * torch.sign(g[~zero]), STEP[p.dtype])


def test_tensor_lr_many_tensors_and_round_trip() -> None:
    sizes = [int(s) for s in torch.randint(0, 300, (200,))]
    compare_trajectory(
        lambda ps: Lion(ps, lr=torch.tensor(1e-3), weight_decay=0.1),
        lambda ps: ReferenceLion(ps, lr=1e-3, weight_decay=0.1),
        torch.float32,
        steps=10,
        sizes=sizes,
    )
    start, grads = random_problem(8, sizes=(7, 4097))
    a = leaves(start, torch.float64)
    opt = Lion(a, lr=1e-3)
    run_steps(opt, a, grads[:4])
    b = [x.detach().clone().requires_grad_() for x in a]
    opt_b = Lion(b, lr=1e-3)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert sorted(opt_b.state[b[0]]) == ["exp_avg"]
    run_steps(opt, a, grads[4:])
    run_steps(opt_b, b, grads[4:])
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "round trip")


@pytest.mark.parametrize(
    "kw",
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"lr": torch.tensor([0.1, 0.2])}, "Tensor lr must be 1-element"),
        ({"betas": (1.0, 0.99)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value: -1.0"),
    ],
    ids=str,
)
def test_constructor_errors(kw: tuple[dict[str, Any], str]) -> None:
    args, message = kw
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Lion([torch.zeros(2, requires_grad=True)], **args)


def test_adam_style_errors_match_torch() -> None:
    # Lion follows torch.optim.Adam's wording for the arguments they share.
    p = [torch.zeros(2, requires_grad=True)]
    for kw in ({"lr": -1.0}, {"betas": (1.0, 0.99)}, {"betas": (0.9, 1.5)}):
        assert_same_errors(lambda kw=kw: Lion(p, **kw), lambda kw=kw: torch.optim.Adam(p, **kw))  # type: ignore[misc]
    with pytest.raises(NotImplementedError, match="differentiable"):
        Lion(p, differentiable=True)
    opt = Lion(p, max_grad_norm=3.0)
    state = opt.__getstate__()
    del state["param_groups"][0]["maximize"]
    fresh = copy.copy(opt)
    fresh.__setstate__(state)
    assert fresh.param_groups[0]["maximize"] is False
    assert copy.deepcopy(opt).max_grad_norm == 3.0


def test_functional_numpy() -> None:
    rng = np.random.default_rng(7)
    p, g = rng.standard_normal(4097), rng.standard_normal(4097)
    m = np.zeros_like(p)
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g.copy())
    ref = ReferenceLion([tp], lr=1e-2, weight_decay=0.5)
    for _ in range(3):
        gradfuse.functional.lion_([p], [g], [m], lr=1e-2, weight_decay=0.5)
        ref.step()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(m), ref.state[tp]["exp_avg"], STEP[torch.float64], "numpy m")
