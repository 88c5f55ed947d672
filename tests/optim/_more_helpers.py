"""Shared drivers for the Adagrad / RMSprop / Lion / clipping tests: trajectories against a
reference optimizer and the float64 comparison for 16-bit dtypes."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from tolerances import (
    LOW_PRECISION_DTYPES,
    TRAJECTORY,
    assert_close,
    assert_low_precision,
    assert_mean_error,
)

SIZES = (1, 7, 4097, 0)

MakeOpt = Callable[[list[torch.Tensor]], Any]


@pytest.fixture
def one_torch_thread() -> Any:
    """torch's intra-op threads spin on a loaded 2-core machine (float16 sqrt: 10 ms instead of
    3 us); the references run single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def leaves(start: Sequence[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    return [x.to(dtype).clone().requires_grad_() for x in start]


def run_steps(
    opt: Any, params: list[torch.Tensor], grads: list[list[torch.Tensor]], before_step: Any = None
) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.to(p.dtype).clone()
        if before_step is not None:
            before_step(params)
        opt.step()


def random_problem(
    steps: int, sizes: Sequence[int] = SIZES, zero_frac: float = 0.0
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    """Fresh random params and per-step gradients (float64, never all zeros)."""
    start = [torch.randn(n, dtype=torch.float64) for n in sizes]
    grads = []
    for _ in range(steps):
        gs = [torch.randn(n, dtype=torch.float64) for n in sizes]
        if zero_frac:
            for g in gs:
                g[torch.rand(g.shape) < zero_frac] = 0.0
        grads.append(gs)
    return start, grads


def compare_trajectory(
    make_ours: MakeOpt,
    make_ref: MakeOpt,
    dtype: torch.dtype,
    steps: int = 100,
    sizes: Sequence[int] = SIZES,
    msg: str = "",
    before_step: Any = None,
    tol: Any = None,
    mean_error: bool = False,
) -> None:
    """``steps`` steps of ours and the reference from the same start and gradients.

    float32/float64: ours against the reference in the same dtype (``tol`` or TRAJECTORY).
    float16/bfloat16: ours and the reference in that dtype, both against the reference in
    float64 (tolerances.assert_low_precision). ``mean_error`` (ill-conditioned cases, any
    dtype): the same three runs, compared by mean error (tolerances.assert_mean_error)."""
    low = dtype in LOW_PRECISION_DTYPES or mean_error
    start, grads = random_problem(steps, sizes)
    if low:
        # Gradients as the 16-bit run sees them, so all three runs get the same values.
        grads = [[g.to(dtype).double() for g in gs] for gs in grads]
        start = [x.to(dtype).double() for x in start]
    ours = leaves(start, dtype)
    run_steps(make_ours(ours), ours, grads, before_step)
    theirs = leaves(start, dtype)
    run_steps(make_ref(theirs), theirs, grads, before_step)
    if low:
        ref = leaves(start, torch.float64)
        run_steps(make_ref(ref), ref, grads, before_step)

        # One comparison over all elements: a max over a 1-element tensor is a single sample of
        # the rounding noise, and either run can be luckier there (the mean errors match).
        def flat(xs: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([x.detach().reshape(-1) for x in xs])

        a, b, r = flat(ours), flat(theirs), flat(ref)
        assert torch.isfinite(a[torch.isfinite(r)]).all(), f"{msg}: non-finite values"
        # torch's 16-bit for-loop can itself produce NaN where float64 does not (e.g. Adagrad's
        # eps=1e-10 rounds to 0 in float16, and a zero gradient then gives 0/0): compare where
        # torch is finite; ours was just required to be finite everywhere.
        keep = torch.isfinite(b)
        check = assert_mean_error if mean_error else assert_low_precision
        check(a[keep], b[keep], r[keep], msg)
    else:
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_close(a.detach(), b.detach(), tol or TRAJECTORY[dtype], f"{msg} param {i}")


def assert_same_errors(make_ours: Callable[[], Any], make_theirs: Callable[[], Any]) -> None:
    """Both constructors raise the same exception type with the same message."""
    errors = []
    for make in (make_ours, make_theirs):
        try:
            make()
        except Exception as exc:  # noqa: BLE001 - compared below
            errors.append((type(exc), str(exc)))
        else:
            errors.append((None, ""))
    assert errors[0] == errors[1], errors
    assert errors[0][0] is not None


def state_dict_round_trip(
    make_ours: MakeOpt, make_torch: MakeOpt, dtype: torch.dtype = torch.float64, steps: int = 6
) -> None:
    """Mid-run checkpoints move both ways: ours -> torch and torch -> ours continue alike."""
    start, grads = random_problem(2 * steps)
    first, second = grads[:steps], grads[steps:]
    for make_a, make_b in ((make_ours, make_torch), (make_torch, make_ours)):
        a = leaves(start, dtype)
        opt_a = make_a(a)
        run_steps(opt_a, a, first)
        # A copy, as torch.save/torch.load would give: torch's load_state_dict keeps the `step`
        # tensors of the dict it is given, which would otherwise be shared by both optimizers.
        sd = copy.deepcopy(opt_a.state_dict())
        b = [x.detach().clone().requires_grad_() for x in a]
        opt_b = make_b(b)
        opt_b.load_state_dict(sd)
        assert opt_b.state_dict()["param_groups"] == sd["param_groups"]
        run_steps(opt_a, a, second)
        run_steps(opt_b, b, second)
        for x, y in zip(a, b, strict=True):
            assert_close(x.detach(), y.detach(), TRAJECTORY[dtype], "after load_state_dict")
        # State names and layout identical.
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].keys() == sb[k].keys()


def check_amp_skip_then_scaled_step(
    make_ours: MakeOpt,
    make_ref: MakeOpt,
    start: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
    scale: float,
    bad: float,
) -> None:
    """GradScaler's protocol, set by hand, after one plain float32 step over ``grads[0]``: a step
    over ``grads[1]`` times ``scale`` with one entry made ``bad`` (inf or NaN) and ``found_inf``
    set changes no param, no state and no group entry; with that entry restored and
    ``found_inf`` 0, the scaled step equals ``make_ref``'s unscaled one from the same state."""
    a = leaves(start, torch.float32)
    opt = make_ours(a)
    run_steps(opt, a, grads[:1])
    before = [x.detach().clone() for x in a]
    state = copy.deepcopy(opt.state_dict())
    for p, g in zip(a, grads[1], strict=True):
        p.grad = g.float() * scale
    a[2].grad[5] = bad
    opt.grad_scale = torch.tensor([scale])
    opt.found_inf = torch.tensor([1.0])
    opt.step()
    for x, y in zip(a, before, strict=True):
        assert torch.equal(x.detach(), y)
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    for k, s in state["state"].items():
        for key, v in s.items():
            assert torch.equal(after["state"][k][key], v), key
    a[2].grad[5] = grads[1][2][5].float() * scale
    opt.found_inf = torch.tensor([0.0])
    opt.step()
    r = [x.clone().requires_grad_() for x in before]
    ref = make_ref(r)
    ref.load_state_dict(copy.deepcopy(state))
    run_steps(ref, r, grads[1:2])
    for x, y in zip(a, r, strict=True):
        assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float32], "grad_scale")


def check_grad_scaler_skips_inf(make: Any, param: str, index: tuple[int, ...], bad: float) -> None:
    """Four torch.amp.GradScaler steps of ``make(model.parameters())`` on a small linear model;
    the third one's gradient of ``param`` gets ``bad`` (inf or NaN) at ``index``: that step
    changes neither params nor state, so three steps count."""
    model = torch.nn.Linear(7, 3)
    opt = make(model.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x = torch.randn(5, 7)
    for step in range(4):
        opt.zero_grad()
        scaler.scale(model(x).square().mean()).backward()
        if step == 2:
            getattr(model, param).grad[index] = bad
            before = copy.deepcopy((list(model.parameters()), opt.state_dict()))
        scaler.step(opt)
        scaler.update()
        if step == 2:
            for p, q in zip(before[0], model.parameters(), strict=True):
                assert torch.equal(p, q)
            after = opt.state_dict()["state"]
            for k, s in before[1]["state"].items():
                for key, v in s.items():
                    assert torch.equal(torch.as_tensor(v), torch.as_tensor(after[k][key]))
    assert float(opt.state[model.weight]["step"]) == 3.0


def compare_paths(ours: Any, theirs: Any, configs: Sequence[dict[str, Any]]) -> None:
    """``ours(params, **kw)`` against ``theirs``'s for-loop path, 20 float64 steps, for each
    ``kw`` of ``configs``; the flags that pick a path rather than a result (``foreach``,
    ``fused``, ``capturable``) go to ours only."""
    for kw in configs:
        ref_kw = {k: v for k, v in kw.items() if k not in ("foreach", "fused", "capturable")}
        compare_trajectory(
            lambda ps, kw=kw: ours(ps, **kw),  # type: ignore[misc]
            lambda ps, ref_kw=ref_kw: theirs(ps, foreach=False, **ref_kw),  # type: ignore[misc]
            torch.float64,
            steps=20,
            msg=str(kw),
        )
