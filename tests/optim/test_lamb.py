"""gradfuse.optim.LAMB and functional.lamb_ (apex FusedLAMB semantics) against
pytorch_optimizer.Lamb with the options that map, and against gradfuse.testing.LAMB (the paper's
algorithm with apex's choices, plain torch ops; float64 is the low-precision reference).

How apex's options map onto pytorch-optimizer 4.1.0's Lamb (README, "LAMB"):
- bias correction: apex ``bias_correction=True`` divides m by ``1 - beta1^t`` and v by
  ``1 - beta2^t``; pytorch-optimizer never corrects v, and by default (``adam_debias=False``)
  divides its step size by ``1 - beta1^t`` (a different update: the trust ratio cancels a factor
  on u but not one on the step). apex ``bias_correction=False`` = pytorch-optimizer
  ``adam_debias=True`` (no correction at all);
- apex ``adam_w_mode=True`` (``wd * p`` added to the update, inside the trust ratio) =
  pytorch-optimizer ``weight_decouple=False``; pytorch-optimizer's ``weight_decouple=True``
  (``p *= 1 - lr * wd`` before the step, outside the ratio) and apex's L2 mode have no
  counterpart;
- the trust ratio: apex ``||p|| / ||u||`` only where ``weight_decay != 0`` (or ``use_nvlamb``);
  pytorch-optimizer ``min(||p||, 10) / (||u|| + eps)`` always (``adam=True``: never). So apex
  ``use_nvlamb=True`` = pytorch-optimizer ``adam=False`` for ``||p|| < 10`` and up to ``eps``;
  apex ``weight_decay=0`` without nvlamb = pytorch-optimizer ``adam=True``;
- clipping: apex divides by ``norm / max_grad_norm`` when the global norm exceeds
  ``max_grad_norm`` (default 1.0, on); pytorch-optimizer multiplies by
  ``min(max_grad_norm / (norm + eps), 1)`` with ``pre_norm=True`` only (default off).
"""

from __future__ import annotations

import copy
import functools
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from _more_helpers import (
    check_amp_skip_then_scaled_step,
    compare_trajectory,
    leaves,
    one_torch_thread,
    random_problem,
    run_steps,
)
from pytorch_optimizer import Lamb as PyoptLamb

import gradfuse
from conftest import DTYPES
from gradfuse.optim import LAMB
from gradfuse.testing import LAMB as ReferenceLAMB
from tolerances import CLIPPED_FLOAT64, CPU_VS_CUDA, STEP, TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

SIZES = (1, 7, 4097, 0)


def small_problem(steps: int, sizes: Any = SIZES) -> tuple[list[torch.Tensor], list[Any]]:
    # ||p|| < 10 everywhere, so that pytorch-optimizer's clamp of the weight norm never acts.
    start, grads = random_problem(steps, sizes)
    return [0.05 * x for x in start], grads


# Every option of apex's FusedLAMB, in float64 and float32, against the paper's reference.
OPTIONS = list(
    itertools.product(
        [True, False],  # bias_correction
        [True, False],  # adam_w_mode
        [0.0, 0.05],  # weight_decay
        [True, False],  # grad_averaging
        [False, True],  # use_nvlamb
    )
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("bias_correction", "adam_w_mode", "wd", "averaging", "nvlamb"), OPTIONS)
def test_every_option_against_reference(
    dtype: torch.dtype,
    bias_correction: bool,
    adam_w_mode: bool,
    wd: float,
    averaging: bool,
    nvlamb: bool,
) -> None:
    kw: dict[str, Any] = {
        "lr": 1e-2,
        "bias_correction": bias_correction,
        "adam_w_mode": adam_w_mode,
        "weight_decay": wd,
        "grad_averaging": averaging,
        "use_nvlamb": nvlamb,
        "max_grad_norm": 20.0,
    }
    compare_trajectory(
        lambda ps: LAMB(ps, **kw), lambda ps: ReferenceLAMB(ps, **kw), dtype, steps=30, msg=str(kw)
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("maximize", [False, True])
def test_trajectory_defaults(dtype: torch.dtype, maximize: bool) -> None:
    # apex's defaults: weight decay 0.01 (trust ratio on), clipping at norm 1 (always acts here).
    compare_trajectory(
        lambda ps: LAMB(ps, maximize=maximize),
        lambda ps: ReferenceLAMB(ps, maximize=maximize),
        dtype,
        msg=f"maximize={maximize}",
    )


PYOPT = list(itertools.product([0.0, 0.1], [True, False], [0.0, 1.0], [False, True]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("wd", "averaging", "max_norm", "maximize"), PYOPT)
def test_against_pytorch_optimizer(
    dtype: torch.dtype, wd: float, averaging: bool, max_norm: float, maximize: bool
) -> None:
    # eps tiny: pytorch-optimizer adds it to ||u|| in the trust ratio and to the global norm.
    eps = 1e-16
    ours: dict[str, Any] = {
        "lr": 1e-2,
        "betas": (0.9, 0.99),
        "eps": eps,
        "weight_decay": wd,
        "bias_correction": False,
        "adam_w_mode": True,
        "grad_averaging": averaging,
        "max_grad_norm": max_norm,
        "use_nvlamb": True,
        "maximize": maximize,
    }
    theirs: dict[str, Any] = {
        "lr": 1e-2,
        "betas": (0.9, 0.99),
        "eps": eps,
        "weight_decay": wd,
        "weight_decouple": False,
        "adam_debias": True,
        "grad_averaging": averaging,
        "max_grad_norm": max_norm,
        "pre_norm": max_norm > 0,
        "maximize": maximize,
        "foreach": False,
    }
    start, grads = small_problem(100)
    a, b = leaves(start, dtype), leaves(start, dtype)
    run_steps(LAMB(a, **ours), a, grads)
    run_steps(PyoptLamb(b, **theirs), b, grads)
    # Both clipping factors are float32 numbers (gradfuse's GradScaling, pytorch-optimizer's
    # float32 global norm), rounded differently.
    tol = CLIPPED_FLOAT64 if max_norm and dtype == torch.float64 else TRAJECTORY[dtype]
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert_close(x.detach(), y.detach(), tol, f"{ours} param {i}")


def test_no_trust_ratio_is_pytorch_optimizer_adam_mode() -> None:
    # apex without weight decay and nvlamb: no trust ratio, as pytorch-optimizer's adam=True.
    start, grads = small_problem(50)
    a, b = leaves(start, torch.float64), leaves(start, torch.float64)
    run_steps(LAMB(a, lr=1e-2, weight_decay=0.0, bias_correction=False, max_grad_norm=0), a, grads)
    run_steps(PyoptLamb(b, lr=1e-2, adam=True, adam_debias=True, eps=1e-6, foreach=False), b, grads)
    for x, y in zip(a, b, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "adam mode")


def test_trust_ratio_one_where_a_norm_is_zero() -> None:
    # p = 0: ||p|| = 0, ratio = lr. A zero gradient with zero moments: ||u|| = 0, p unchanged.
    p = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    q = torch.randn(5, dtype=torch.float64, requires_grad=True)
    q0 = q.detach().clone()
    p.grad = torch.randn(7, dtype=torch.float64)
    q.grad = torch.zeros(5, dtype=torch.float64)
    LAMB([p, q], lr=0.1, weight_decay=0.0, use_nvlamb=True, max_grad_norm=0).step()
    g = p.grad
    # First step with bias correction: u = g / (|g| + eps).
    assert_close(p.detach(), -0.1 * g / (g.abs() + 1e-6), STEP[torch.float64])
    assert torch.equal(q.detach(), q0)


def test_group_step_state_dict_both_ways_with_pytorch_optimizer() -> None:
    kw_ours = {
        "lr": 1e-2,
        "bias_correction": False,
        "use_nvlamb": True,
        "max_grad_norm": 0,
        "eps": 1e-12,
        "weight_decay": 0.1,
    }
    kw_theirs = {
        "lr": 1e-2,
        "weight_decouple": False,
        "adam_debias": True,
        "eps": 1e-12,
        "weight_decay": 0.1,
        "foreach": False,
    }
    start, grads = small_problem(12)
    for first, second in ((LAMB, PyoptLamb), (PyoptLamb, LAMB)):
        kwa = kw_ours if first is LAMB else kw_theirs
        kwb = kw_ours if second is LAMB else kw_theirs
        a = leaves(start, torch.float64)
        opt_a = first(a, **kwa)
        run_steps(opt_a, a, grads[:6])
        assert opt_a.param_groups[0]["step"] == 6
        b = [x.detach().clone().requires_grad_() for x in a]
        opt_b = second(b, **kwb)
        sd = copy.deepcopy(opt_a.state_dict())
        # The per-param state and group["step"] carry over; the group options are each
        # optimizer's own (pytorch-optimizer's rectify, adam, ...; gradfuse's bias_correction,
        # maximize), so they are taken from the optimizer that loads.
        sd["param_groups"] = [
            {**own, "params": saved["params"], "step": saved["step"]}
            for own, saved in zip(
                opt_b.state_dict()["param_groups"], sd["param_groups"], strict=True
            )
        ]
        opt_b.load_state_dict(sd)
        assert opt_b.param_groups[0]["step"] == 6
        for s in opt_b.state.values():
            assert {"exp_avg", "exp_avg_sq"} <= set(s)
        run_steps(opt_a, a, grads[6:])
        run_steps(opt_b, b, grads[6:])
        for x, y in zip(a, b, strict=True):
            assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "round trip")


def test_param_groups_and_checkpoint_mid_run() -> None:
    start, grads = small_problem(20)

    def make(cls: Any, ps: list[torch.Tensor]) -> Any:
        return cls(
            [{"params": ps[:2], "weight_decay": 0.0}, {"params": ps[2:], "lr": 3e-3}],
            lr=1e-2,
            max_grad_norm=5.0,
        )

    a, r = leaves(start, torch.float64), leaves(start, torch.float64)
    opt, ref = make(LAMB, a), make(ReferenceLAMB, r)
    run_steps(opt, a, grads[:10])
    run_steps(ref, r, grads[:10])
    b = [x.detach().clone().requires_grad_() for x in a]
    opt_b = make(LAMB, b)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    run_steps(opt_b, b, grads[10:])
    run_steps(ref, r, grads[10:])
    for x, y in zip(b, r, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "groups + checkpoint")


def test_grad_scaler_inf_changes_nothing() -> None:
    # A skipped step leaves the group's step count (apex counts per group) at 1, too.
    start, grads = small_problem(3)
    make = functools.partial(LAMB, lr=1e-2)
    check_amp_skip_then_scaled_step(make, make, start, grads, scale=1024.0, bad=float("inf"))


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
        ({"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
        ({"betas": (1.0, 0.99)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
        ({"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
        ({"max_grad_norm": -1.0}, ValueError, "Invalid max_grad_norm value: -1.0"),
        ({"amsgrad": True}, RuntimeError, "does not support the AMSGrad variant"),
    ],
    ids=str,
)
def test_constructor_errors(kw: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        LAMB([torch.zeros(2, requires_grad=True)], **kw)


def test_bad_arguments_write_nothing() -> None:
    p = [torch.randn(7), torch.randn(5)]
    g = [torch.randn(7), torch.randn(5)]
    m = [torch.zeros(7), torch.zeros(5)]
    v = [torch.zeros(7), torch.zeros(5)]
    keep = [x.clone() for x in p + m + v]
    bad_cases: list[tuple[dict[str, Any], str]] = [
        ({"exp_avg_sqs": [v[0], torch.zeros(4)]}, r"exp_avg_sqs\[1\]"),
        ({"exp_avgs": [m[0], torch.zeros(5, dtype=torch.float64)]}, r"exp_avgs\[1\]"),
        ({"exp_avgs": [m[0], None]}, r"exp_avgs\[1\] is None"),
        ({"exp_avgs": [m[0], p[1]]}, "share|overlap"),
        ({"step": 0}, "step must be an int >= 1"),
        ({"found_inf": torch.tensor([0.0], dtype=torch.float64)}, "found_inf"),
    ]
    for override, match in bad_cases:
        args: dict[str, Any] = {"exp_avgs": m, "exp_avg_sqs": v, "step": 1}
        args.update(override)
        with pytest.raises((ValueError, TypeError), match=match):
            gradfuse.functional.lamb_(p, g, args.pop("exp_avgs"), args.pop("exp_avg_sqs"), **args)
        for x, y in zip(p + m + v, keep, strict=True):
            assert torch.equal(x, y)
    q = torch.zeros(3, requires_grad=True)
    q.grad = torch.zeros(3).to_sparse()
    opt = LAMB([q])
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_functional_numpy_and_empty() -> None:
    rng = np.random.default_rng(3)
    p, g = rng.standard_normal(4097), rng.standard_normal(4097)
    m, v = np.zeros_like(p), np.zeros_like(p)
    e = np.zeros(0)
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g.copy())
    ref = ReferenceLAMB([tp], lr=1e-2, weight_decay=0.5, max_grad_norm=0)
    for step in range(1, 4):
        gradfuse.functional.lamb_(
            [p, e], [g, e], [m, e], [v, e], step=step, lr=1e-2, weight_decay=0.5
        )
        ref.step()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(m), ref.state[tp]["exp_avg"], STEP[torch.float64], "numpy m")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    # One rule (gradfuse/math/lamb.h) on both; the norms are reduced in another order on CUDA.
    sizes = (1, 7, 4097, 0, 70_001)
    start, grads = small_problem(5, sizes)
    a = [x.to(dtype).clone().requires_grad_() for x in start]
    b = [x.to(dtype).cuda().requires_grad_() for x in start]
    run_steps(LAMB(a, lr=1e-2, use_nvlamb=True), a, grads)
    run_steps(LAMB(b, lr=1e-2, use_nvlamb=True), b, [[g.cuda() for g in gs] for gs in grads])
    for x, y in zip(a, b, strict=True):
        assert_close(y.detach().cpu(), x.detach(), CPU_VS_CUDA[dtype], "cuda vs cpu")
