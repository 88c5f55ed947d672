"""gradfuse.optim.AdEMAMix and functional.ademamix_ against bitsandbytes' AdEMAMix (0.50.2,
32-bit state, its CPU backend) and the float64 reference gradfuse.testing.AdEMAMix.

bitsandbytes computes in float32 whatever the params' dtype (it keeps float32 state and
rounds the param once), so float32 runs are compared with it directly, float64 runs with the
float64 reference (itself checked against bitsandbytes' own torch reference,
``_ReferenceAdEMAMix``), and 16-bit runs by their error against float64.
"""

from __future__ import annotations

import copy
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
from gradfuse.optim import AdEMAMix
from gradfuse.testing import AdEMAMix as ReferenceAdEMAMix
from tolerances import STEP, TRAJECTORY, assert_close, assert_low_precision

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

bnb = pytest.importorskip("bitsandbytes")

# Every option of bitsandbytes' AdEMAMix (32-bit): weight decay on/off, alpha, betas, eps, the
# two warm-ups alone and together (100 steps cross both warm-up ends).
OPTIONS: list[dict[str, Any]] = [
    {},
    {"weight_decay": 0.0},
    {"alpha": 2.0, "betas": (0.8, 0.99, 0.999), "eps": 1e-6, "lr": 3e-3},
    {"t_alpha": 50},
    {"t_beta3": 40},
    {"t_alpha": 30, "t_beta3": 70, "weight_decay": 0.1},
]
_IDS = [",".join(kw) or "defaults" for kw in OPTIONS]
# bitsandbytes steps non-empty tensors only (an empty one is checked against the reference).
BNB_SIZES = (1, 7, 4097)


def _bnb(ps: list[torch.Tensor], **kw: Any) -> Any:
    return bnb.optim.AdEMAMix(ps, **kw)


@pytest.mark.parametrize("kw", OPTIONS, ids=_IDS)
def test_float32_trajectory_against_bitsandbytes(kw: dict[str, Any]) -> None:
    compare_trajectory(
        lambda ps: AdEMAMix(ps, **kw), lambda ps: _bnb(ps, **kw), torch.float32,
        sizes=BNB_SIZES, msg=str(kw),
    )  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kw", OPTIONS, ids=_IDS)
def test_trajectory_against_float64_reference(dtype: torch.dtype, kw: dict[str, Any]) -> None:
    compare_trajectory(
        lambda ps: AdEMAMix(ps, **kw), lambda ps: ReferenceAdEMAMix(ps, **kw), dtype, msg=str(kw)
    )


@pytest.mark.parametrize("kw", OPTIONS, ids=_IDS)
def test_reference_is_bitsandbytes_reference(kw: dict[str, Any]) -> None:
    # bitsandbytes' own float64-capable reference (_ReferenceAdEMAMix) recomputes alpha and
    # beta3 in place per param (its schedules compound over params), so one param here.
    from bitsandbytes.optim.ademamix import _ReferenceAdEMAMix

    compare_trajectory(
        lambda ps: ReferenceAdEMAMix(ps, **kw),
        lambda ps: _ReferenceAdEMAMix(ps, **kw),
        torch.float64,
        sizes=(4097,),
        msg=str(kw),
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("kw", OPTIONS[::3], ids=_IDS[::3])
def test_low_precision_within_twice_bitsandbytes_error(
    dtype: torch.dtype, kw: dict[str, Any]
) -> None:
    # bitsandbytes keeps float32 state for 16-bit params: ours with state_dtype=float32 (the
    # same layout) is within 2x its error against the float64 reference.
    steps = 100
    start, grads = random_problem(steps, BNB_SIZES)
    grads = [[g.to(dtype).double() for g in gs] for gs in grads]
    start = [x.to(dtype).double() for x in start]
    ours = leaves(start, dtype)
    run_steps(AdEMAMix(ours, state_dtype=torch.float32, **kw), ours, grads)
    theirs = leaves(start, dtype)
    run_steps(_bnb(theirs, **kw), theirs, grads)
    ref = leaves(start, torch.float64)
    run_steps(ReferenceAdEMAMix(ref, **kw), ref, grads)

    def flat(xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.detach().reshape(-1) for x in xs])

    assert_low_precision(flat(ours), flat(theirs), flat(ref), str(kw))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_default_state(dtype: torch.dtype) -> None:
    # Default layout (state in the params' dtype): within 2x the op-by-op 16-bit reference.
    compare_trajectory(
        lambda ps: AdEMAMix(ps, t_alpha=20), lambda ps: ReferenceAdEMAMix(ps, t_alpha=20), dtype
    )


def test_param_groups_and_bitsandbytes_checkpoints_both_ways() -> None:
    start, grads = random_problem(12, BNB_SIZES)

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [
            {"params": ps[:1]},
            {"params": ps[1:], "weight_decay": 0.0, "alpha": 3.0, "t_alpha": 5, "t_beta3": 9},
        ]

    # gradfuse -> bitsandbytes
    a = leaves(start, torch.float32)
    opt_a = AdEMAMix(groups(a))
    run_steps(opt_a, a, grads[:6])
    checkpoint = copy.deepcopy(opt_a.state_dict())
    d = [x.detach().clone().requires_grad_() for x in a]
    b = [x.detach().clone().requires_grad_() for x in a]
    opt_b = _bnb(groups(b))
    opt_b.load_state_dict(copy.deepcopy(opt_a.bitsandbytes_state_dict()))
    assert opt_b.state[b[1]]["state1"].shape == (2, 7)
    assert opt_b.state[b[1]]["step"] == 6
    # bitsandbytes -> gradfuse (its state_dict wraps state1/state2 for FSDP)
    c = [x.detach().clone().requires_grad_() for x in a]
    opt_c = AdEMAMix(groups(c))
    opt_c.load_state_dict(copy.deepcopy(opt_b.state_dict()))
    assert sorted(opt_c.state[c[1]]) == ["exp_avg", "exp_avg_slow", "exp_avg_sq", "step"]
    for opt, ps in ((opt_a, a), (opt_b, b), (opt_c, c)):
        run_steps(opt, ps, grads[6:])
    for x, y, z in zip(a, b, c, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float32], "gradfuse -> bnb")
        assert_close(z.detach(), y.detach(), TRAJECTORY[torch.float32], "bnb -> gradfuse")
    # torch's own round trip: bitwise the same continuation
    opt_d = AdEMAMix(groups(d))
    opt_d.load_state_dict(checkpoint)
    run_steps(opt_d, d, grads[6:])
    for x, y in zip(a, d, strict=True):
        assert torch.equal(x, y)


def test_grad_scaler_inf_changes_nothing() -> None:
    check_grad_scaler_skips_inf(
        lambda ps: AdEMAMix(ps, lr=1e-2, t_alpha=3), "bias", (1,), float("nan")
    )


@pytest.mark.parametrize(
    "kw",
    [{"lr": -1.0}, {"eps": -1.0}, {"betas": (1.0, 0.9, 0.9)}, {"betas": (0.9, 0.9, 1.0)},
     {"weight_decay": -1.0}],
    ids=str,
)  # fmt: skip
def test_constructor_errors_are_bitsandbytes(kw: dict[str, Any]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid") as theirs:
        _bnb(p, **kw)
    with pytest.raises(ValueError, match="Invalid") as ours:
        AdEMAMix(p, **kw)
    assert str(ours.value) == str(theirs.value)


def test_unsupported_options() -> None:
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="optim_bits must be 8 or 32"):
        AdEMAMix(p, optim_bits=16)
    with pytest.raises(ValueError, match="takes no state_dtype"):
        AdEMAMix(p, optim_bits=8, state_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="log"):
        AdEMAMix(p, betas=(0.0, 0.9, 0.99), t_beta3=10)
    assert copy.deepcopy(AdEMAMix(p, max_grad_norm=2.0)).max_grad_norm == 2.0


def test_maximize_is_minimizing_the_negated_gradient() -> None:
    start, grads = random_problem(10)
    a = leaves(start, torch.float64)
    run_steps(AdEMAMix(a, maximize=True, t_beta3=5), a, grads)
    b = leaves(start, torch.float64)
    run_steps(AdEMAMix(b, t_beta3=5), b, [[-g for g in gs] for gs in grads])
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_functional_numpy_and_errors_write_nothing() -> None:
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal(4097), rng.standard_normal(4097)
    m1, m2, nu = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    steps = [0]
    tp = torch.from_numpy(p.copy()).requires_grad_()
    ref = ReferenceAdEMAMix([tp], lr=1e-2, t_alpha=2, t_beta3=3)
    for _ in range(4):
        tp.grad = torch.from_numpy(g.copy())
        gradfuse.functional.ademamix_(
            [p], [g], [m1], [m2], [nu], state_steps=steps, lr=1e-2, t_alpha=2, t_beta3=3
        )
        ref.step()
    assert steps == [4]
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(m2), ref.state[tp]["exp_avg_slow"], STEP[torch.float64], "m2")
    before = [x.copy() for x in (p, m1, m2, nu)]
    bad: list[dict[str, Any]] = [
        {"lr": -1.0},
        {"t_beta3": 5, "beta1": 0.0},
        {"t_alpha": -2},
        {"eps": "x"},
    ]
    for kw in bad:
        with pytest.raises((ValueError, TypeError)):
            gradfuse.functional.ademamix_([p], [g], [m1], [m2], [nu], state_steps=steps, **kw)
    with pytest.raises(ValueError, match="exp_avg_slows"):
        gradfuse.functional.ademamix_([p], [g], [m1], [m2[:5]], [nu], state_steps=steps)
    assert steps == [4]
    for x, y in zip((p, m1, m2, nu), before, strict=True):
        assert np.array_equal(x, y)
