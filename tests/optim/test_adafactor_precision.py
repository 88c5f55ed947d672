"""gradfuse.optim.Adafactor under the precision policies: master weights, a state dtype for
row_var/col_var/variance (bfloat16 for float32 params, float32 for 16-bit ones), Kahan
compensation, stochastic rounding; checkpoints; bad input; 8-bit state refused.

The kernel computes in float32 whatever the storage, so master weights are float32 Adafactor
exactly (storing its state the same way), and a state dtype is judged against a float32
reference that stores its state in that dtype at the same points (after each lerp, as
torch's own code does for state in the params' dtype)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from _more_helpers import one_torch_thread

import gradfuse.optim as go
from gradfuse.functional import adafactor_
from optim_testing import (
    CUDA_STORAGES,
    assert_like_cpu,
    assert_policy_refusals,
    assert_same_state,
    assert_state_like_cpu,
    assert_step_like_cpu,
    last_step_on_both,
    leaves,
    seeded_grads,
    seeded_tensors,
    step_with,
    stepped_on,
    stochastic_checkpoint_runs,
    unchanged,
)
from tolerances import TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# Factored matrices (one of several row blocks, a batch of matrices), vectors and a scalar
# (the unfactored variance).
SHAPES = [(96, 40), (3, 7, 9), (1500, 200), (33,), (4097,), ()]
KW: dict[str, Any] = {"lr": 0.02, "weight_decay": 0.1, "eps": (1e-30, 1e-3)}


def _run(params: list[torch.Tensor], grads: Any, **kw: Any) -> go.Adafactor:
    opt = go.Adafactor(params, **kw)
    for gs in grads:
        step_with(opt, params, gs)
    return opt


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def _reference(
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    store_state: Callable[[torch.Tensor], torch.Tensor],
    store_param: Callable[[torch.Tensor], torch.Tensor],
    lr: float,
    weight_decay: float,
    eps: tuple[float, float],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """float32 Adafactor in torch's order of operations (torch/optim/_adafactor.py's for-loop),
    with its state values passed through ``store_state`` after each lerp and the new params
    through ``store_param``: a state or a param kept in another dtype at the points the kernel
    stores them."""
    eps1, eps2 = eps
    params = [s.float().clone() for s in start]
    states: list[dict[str, torch.Tensor]] = []
    for p in params:
        if p.dim() > 1:
            states.append(
                {
                    "row_var": p.new_zeros((*p.shape[:-1], 1)),
                    "col_var": p.new_zeros((*p.shape[:-2], 1, p.shape[-1])),
                }
            )
        else:
            states.append({"variance": torch.zeros_like(p)})
    for t, gs in enumerate(grads, start=1):
        w = t**-0.8
        rho = min(lr, 1 / math.sqrt(t))
        for i, (p, grad) in enumerate(zip(params, gs, strict=True)):
            g = grad.float()
            st = states[i]
            alpha = max(eps2, p.norm(2).item() / math.sqrt(p.numel())) * rho
            new = p * (1 - lr * weight_decay)
            if g.dim() > 1:
                row_mean = torch.norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1))
                st["row_var"] = store_state(st["row_var"].lerp(row_mean, w))
                col_mean = torch.norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2))
                st["col_var"] = store_state(st["col_var"].lerp(col_mean, w))
                v = st["row_var"] @ st["col_var"]
                v = v / st["row_var"].mean(dim=-2, keepdim=True).clamp(min=eps1)
            else:
                st["variance"] = store_state(st["variance"].lerp(g * g, w))
                v = st["variance"].clone()
            u = v.clamp(min=eps1 * eps1).rsqrt() * g
            denom = max(1.0, u.norm(2).item() / math.sqrt(u.numel()))
            params[i] = store_param(new.add(u, alpha=-alpha / denom))
    return params, states


def test_reference_is_torch() -> None:
    # The reference above, storing nothing differently, is torch.optim.Adafactor.
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 5)
    ref, _ = _reference(start, grads, lambda x: x, lambda x: x, **KW)
    theirs = leaves(start, torch.float32)
    opt = torch.optim.Adafactor(theirs, foreach=False, **KW)
    for gs in grads:
        step_with(opt, theirs, gs)
    for p, q in zip(ref, theirs, strict=True):
        assert_close(p, q.detach(), TRAJECTORY[torch.float32])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_master_weights_with_float32_state_are_the_float32_run(dtype: torch.dtype) -> None:
    # 16-bit params with master weights and float32 state: the master copy is float32 Adafactor
    # bit for bit (the kernel reads the copy, computes and stores in float32), the param its
    # nearest rounding. eps1=None is float32's epsilon under master weights (the run's dtype).
    start = [s.to(dtype).float() for s in seeded_tensors(SHAPES)]
    grads = [[g.to(dtype).float() for g in gs] for gs in seeded_grads(SHAPES, 6)]
    kw = {**KW, "eps": (None, 1e-3)}
    params = leaves(start, dtype)
    opt = _run(params, grads, master_weights=True, state_dtype=torch.float32, **kw)
    ref = leaves(start, torch.float32)
    ref_opt = _run(ref, grads, **kw)
    for p, q in zip(params, ref, strict=True):
        st, rst = opt.state[p], ref_opt.state[q]
        assert st["master_param"].dtype == torch.float32
        assert torch.equal(st["master_param"], q)
        assert torch.equal(p, q.to(dtype))
        for key in ("row_var", "col_var", "variance"):
            if key in rst:
                assert st[key].dtype == torch.float32
                assert torch.equal(st[key], rst[key]), key


def test_master_weights_with_bfloat16_state_are_float32_with_bfloat16_state() -> None:
    # bfloat16 params, master weights, state in the params' dtype (bfloat16): float32 params
    # with state_dtype=bfloat16 compute the same, bit for bit.
    start = [_bf16(s) for s in seeded_tensors(SHAPES)]
    grads = [[_bf16(g) for g in gs] for gs in seeded_grads(SHAPES, 6)]
    params = leaves(start, torch.bfloat16)
    opt = _run(params, grads, master_weights=True, **KW)
    ref = leaves(start, torch.float32)
    ref_opt = _run(ref, grads, state_dtype=torch.bfloat16, **KW)
    for p, q in zip(params, ref, strict=True):
        st, rst = opt.state[p], ref_opt.state[q]
        assert torch.equal(st["master_param"], q)
        assert torch.equal(p, q.to(torch.bfloat16))
        for key in ("row_var", "col_var", "variance"):
            if key in rst:
                assert st[key].dtype == rst[key].dtype == torch.bfloat16
                assert torch.equal(st[key], rst[key]), key


def test_bfloat16_state_for_float32_params_follows_the_reference() -> None:
    # float32 params, bfloat16 state: float32 Adafactor whose state is rounded to bfloat16 where
    # it is stored. The kernel's float32 sums differ from torch's in the last bits (as for the
    # float32 trajectories), which can move a bfloat16 rounding by one unit (2^-8 relative) of
    # a state value: the params then differ by that fraction of one step, far below the
    # difference bfloat16 state makes (checked against the float32-state run).
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 8)
    params = leaves(start, torch.float32)
    opt = _run(params, grads, state_dtype=torch.bfloat16, **KW)
    ref, ref_states = _reference(start, grads, _bf16, lambda x: x, **KW)
    plain, _ = _reference(start, grads, lambda x: x, lambda x: x, **KW)
    for p, q, rst, f in zip(params, ref, ref_states, plain, strict=True):
        st = opt.state[p]
        for key, value in rst.items():
            assert st[key].dtype == torch.bfloat16
            assert_close(st[key].float(), value, TRAJECTORY[torch.float32], key)
        diff = (p.detach() - q).abs().max().item()
        moved = (f - q).abs().max().item()
        if p.numel() > 1:
            assert moved > 0
            assert diff <= 0.05 * moved, (diff, moved)


def test_float32_state_for_16bit_params_follows_the_reference() -> None:
    # bfloat16 params with float32 state (no master): the params are rounded to bfloat16 each
    # step, the state is float32 Adafactor's. Where the float32 sums differ from torch's in the
    # last bit, a param's rounding can flip (then carried on): about one element in 10^3, and a
    # mean difference far below what rounding the params to bfloat16 changes.
    start = [_bf16(s) for s in seeded_tensors(SHAPES)]
    grads = [[_bf16(g) for g in gs] for gs in seeded_grads(SHAPES, 6)]
    kw = {**KW, "lr": 0.05}
    params = leaves(start, torch.bfloat16)
    opt = _run(params, grads, state_dtype=torch.float32, **kw)
    ref, _ = _reference(start, grads, lambda x: x, _bf16, **kw)
    plain, _ = _reference(start, grads, lambda x: x, lambda x: x, **kw)
    for p, q, f in zip(params, ref, plain, strict=True):
        for key in ("row_var", "col_var", "variance"):
            if key in opt.state[p]:
                assert opt.state[p][key].dtype == torch.float32
        diff = (p.detach().float() - q).abs()
        assert float((diff > 0).float().mean()) <= 4e-3
        assert float(diff.mean()) <= 0.01 * float((q - f).abs().mean())


def test_kahan_and_stochastic_rounding_keep_small_updates() -> None:
    # Steps of ~lr = 1e-3 of RMS(p) against O(1) weights (bfloat16 spacing 2^-8..2^-7): plain
    # bfloat16 rounds most of them away; Kahan compensation keeps them, stochastic rounding
    # keeps them on average.
    shapes = [(64, 64), (256,)]
    start = [_bf16(s) for s in seeded_tensors(shapes, 5)]
    gen = torch.Generator().manual_seed(6)
    drift = [torch.randn(s, generator=gen) for s in shapes]
    grads = [
        [_bf16(d + 0.3 * torch.randn(d.shape, generator=gen)) for d in drift] for _ in range(150)
    ]
    kw = {"lr": 1e-3, "eps": (1e-30, 1e-3)}
    expected, _ = _reference(start, grads, lambda x: x, lambda x: x, weight_decay=0.0, **kw)

    def error(**options: Any) -> float:
        ps = leaves(start, torch.bfloat16)
        opt = _run(ps, grads, state_dtype=torch.float32, **kw, **options)
        total = 0.0
        for p, e in zip(ps, expected, strict=True):
            value = p.detach().float()
            if options.get("kahan"):
                value = value + opt.state[p]["kahan_comp"].float()
            total += float((value - e).abs().mean())
        return total

    moved = sum(float((e - s).abs().mean()) for e, s in zip(expected, start, strict=True))
    plain = error()
    assert plain > 0.3 * moved  # plain bfloat16 really loses the updates
    assert error(kahan=True) < 0.05 * moved
    torch.manual_seed(0)
    assert error(rounding="stochastic") < 0.5 * plain


def test_stochastic_rounding_checkpoint_continues_the_same_bits() -> None:
    params, nearest = stochastic_checkpoint_runs(
        lambda ps, **kw: go.Adafactor(ps, **kw, **KW),
        seeded_tensors(SHAPES),
        seeded_grads(SHAPES, 4),
    )
    for p, q in zip(params, nearest, strict=True):  # the bits are really random
        if p.numel() > 1000:
            assert not torch.equal(p, q)


@pytest.mark.parametrize(
    "options",
    [
        {"state_dtype": torch.bfloat16},
        {"master_weights": True},
        {"master_weights": True, "state_dtype": torch.float32},
        {"kahan": True},
        {"rounding": "stochastic"},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_state_dict_round_trip_is_exact(options: dict[str, Any]) -> None:
    dtype = torch.float32 if options.get("state_dtype") == torch.bfloat16 else torch.bfloat16
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 5)
    params = leaves(start, dtype)
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 0.01}]
    opt = go.Adafactor(groups, **KW, **options)
    for gs in grads[:3]:
        step_with(opt, params, gs)
    sd = copy.deepcopy(opt.state_dict())  # as torch.save / torch.load would
    other = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = go.Adafactor([{"params": other[:3]}, {"params": other[3:], "lr": 0.01}], **KW, **options)
    opt2.load_state_dict(sd)
    assert_same_state(opt, params, opt2, other)
    for gs in grads[3:]:
        step_with(opt, params, gs)
        step_with(opt2, other, gs)
    assert all(torch.equal(p, q) for p, q in zip(params, other, strict=True))


def test_torch_checkpoint_into_bfloat16_state_and_back() -> None:
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 3)
    theirs = leaves(start, torch.float32)
    topt = torch.optim.Adafactor(theirs, foreach=False, **KW)
    for gs in grads[:2]:
        step_with(topt, theirs, gs)
    ours = leaves([t.detach() for t in theirs], torch.float32)
    opt = go.Adafactor(ours, state_dtype=torch.bfloat16, **KW)
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    step_with(opt, ours, grads[2])
    for p, q in zip(ours, theirs, strict=True):
        for key, value in topt.state[q].items():
            if key != "step":
                assert opt.state[p][key].dtype == torch.bfloat16, key
                assert opt.state[p][key].shape == value.shape, key
    back = torch.optim.Adafactor(leaves(start, torch.float32), foreach=False, **KW)
    back.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p in back.param_groups[0]["params"]:
        for key, value in back.state[p].items():
            assert value.dtype == torch.float32, key


def test_amp_skip_with_master_weights_changes_nothing() -> None:
    params = leaves(seeded_tensors(SHAPES[:4]), torch.bfloat16)
    opt = go.Adafactor(params, master_weights=True, **KW)
    step_with(opt, params, seeded_grads(SHAPES[:4], 1)[0])
    before = [p.detach().clone() for p in params]
    state = [v.clone() for p in params for k, v in opt.state[p].items() if k != "step"]
    for p, g in zip(params, seeded_grads(SHAPES[:4], 1, seed=3)[0], strict=True):
        p.grad = g.to(p.dtype)
    opt.grad_scale = torch.tensor([2.0])  # as GradScaler sets them
    opt.found_inf = torch.tensor([1.0])
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    for p in params:
        assert float(opt.state[p]["step"]) == 1.0
    after = [v for p in params for k, v in opt.state[p].items() if k != "step"]
    assert len(after) == len(state)
    assert all(torch.equal(a, b) for a, b in zip(after, state, strict=True))


# --- bad input -----------------------------------------------------------------------------------


def test_8bit_state_is_refused_with_the_reason() -> None:
    ps = [torch.randn(64, 128, requires_grad=True)]
    for option in (torch.uint8, "8bit"):
        with pytest.raises(ValueError, match=r"8-bit state\) is not available: .*rows \+ cols"):
            go.Adafactor(ps, state_dtype=option)
    p, g = torch.randn(5000), torch.randn(5000)
    codes = torch.zeros(5000, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"variances\[0\] holds uint8 codes; .*rows \+ cols"):
        adafactor_([p], [g], [None], [None], [codes], [torch.tensor(0.0)])
    # The functional takes the shared options (lamb_'s): 8-bit's state_absmax is refused by
    # name, an unknown keyword as Python does, nothing written either way.
    pm, gm, row, col = torch.randn(6, 8), torch.randn(6, 8), torch.zeros(6, 1), torch.zeros(1, 8)
    var, steps = torch.zeros(5000), [torch.tensor(0.0), torch.tensor(0.0)]
    same = unchanged([pm, p, row, col, var, *steps])
    lists = ([pm, p], [gm, g], [row, None], [col, None], [None, var], steps)
    absmax = [[torch.ones(1)], [torch.ones(1)], [torch.ones(20)]]
    with pytest.raises(ValueError, match=r"adafactor_: state_absmax is for 8-bit state; .*rows"):
        adafactor_(*lists, state_absmax=absmax)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'absmax'"):
        adafactor_(*lists, absmax=absmax)
    assert same()


def test_optimizer_refusals_name_the_option() -> None:
    assert_policy_refusals(go.Adafactor, (8, 8))


def test_functional_bad_precision_input_writes_nothing() -> None:
    pm, gm, pv, gv = torch.randn(6, 8), torch.randn(6, 8), torch.randn(5), torch.randn(5)
    row, col, var = torch.zeros(6, 1), torch.zeros(1, 8), torch.zeros(5)
    steps = [torch.tensor(0.0), torch.tensor(0.0)]
    bm, bv = pm.to(torch.bfloat16), pv.to(torch.bfloat16)
    brow, bcol, bvar = (x.to(torch.bfloat16) for x in (row, col, var))
    same = unchanged([pm, pv, row, col, var, bm, bv, brow, bcol, bvar, *steps])

    def call(params: Any, rows: Any, cols: Any, vars_: Any, **kw: Any) -> None:
        grads = [gm.to(params[0].dtype), gv.to(params[1].dtype)]
        adafactor_(params, grads, [rows, None], [cols, None], [None, vars_], steps, **kw)

    with pytest.raises(TypeError, match="master_params"):  # float32 params: no master copy
        call([pm, pv], row, col, var, master_params=[pm.clone(), pv.clone()])
    with pytest.raises(TypeError, match=r"kahan_comps is for bfloat16 params"):
        call([pm, pv], row, col, var, kahan_comps=[pm.clone(), pv.clone()])
    with pytest.raises(ValueError, match="seed"):
        call([bm, bv], brow, bcol, bvar, rounding="stochastic")
    with pytest.raises(ValueError, match="cannot be combined"):
        call(
            [bm, bv],
            brow,
            bcol,
            bvar,
            master_params=[pm.clone(), pv.clone()],
            rounding="stochastic",
            seed=1,
        )
    with pytest.raises(TypeError, match=r"row_vars\[0\] has dtype float16"):
        call([pm, pv], row.half(), col.half(), var)
    with pytest.raises(TypeError, match=r"col_vars\[0\] has dtype float32 .*row_vars\[0\]"):
        call([pm, pv], brow, col, var)
    # params[1]'s, the caller's index (not the flat params' 0)
    with pytest.raises(TypeError, match=r"variances\[1\] has dtype float16 but params\[1\]"):
        call([pm, pv], row, col, var.half())
    with pytest.raises(TypeError, match=r"has dtype float16"):  # 16-bit params: float32 only
        call([bm, bv], row.half(), col.half(), bvar)
    with pytest.raises(ValueError, match=r"expected one entry of master_params"):
        call([bm, bv], brow, bcol, bvar, master_params=[pm.clone()])
    assert same()


# ---- CUDA (cuda/adafactor.cu under each storage policy) ----------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize(("dtype", "options"), CUDA_STORAGES, ids=str)
def test_cuda_storage_step_is_the_cpu_kernels(dtype: torch.dtype, options: dict[str, Any]) -> None:
    """From a CPU run's state, one step of the CUDA kernels under each storage policy is the
    CPU kernel's step (optim_testing's CUDA helpers: the reductions add in another order, nvcc
    contracts multiply-adds), factored matrices and vectors alike. The update reads the state
    as stored: a row_var or col_var stored one bfloat16 rounding away moves its whole row's or
    column's step a little, so the params (and master copies) are judged against their step
    (assert_step_like_cpu), the state as every CUDA result."""
    start = [x.to(dtype) for x in seeded_tensors(SHAPES, 3)]
    grads = seeded_grads(SHAPES, 3, 4)
    kw = {**KW, **options}
    moved, state, ours, opt_cuda, theirs, opt_cpu = last_step_on_both(
        go.Adafactor, start, grads, **kw
    )
    assert_state_like_cpu(opt_cuda, opt_cpu, skip=("master_param", "kahan_comp"))
    cuda_states = list(opt_cuda.state.values())
    for i, (st, ref) in enumerate(zip(cuda_states, opt_cpu.state.values(), strict=True)):
        old = state["state"][i]
        assert ours[i].is_cuda
        assert_step_like_cpu(ours[i], theirs[i], moved[i], f"param {i}")
        if options.get("rounding") == "stochastic":
            # Both devices draw the same bits: the same bfloat16 but for a few elements (a
            # wrong key, index or rounding would move a third of them).
            assert_like_cpu(ours[i], theirs[i], f"param {i}")
        if "master_param" in st:
            want = ref["master_param"]
            assert_step_like_cpu(st["master_param"], want, old["master_param"], f"master {i}")
        if "kahan_comp" in st:
            got = ours[i].detach().cpu().double() + st["kahan_comp"].cpu().double()
            want = theirs[i].detach().double() + ref["kahan_comp"].double()
            before = moved[i].double() + old["kahan_comp"].double()
            assert_step_like_cpu(got, want, before, f"kahan {i}")


@pytest.mark.cuda
def test_cuda_and_cpu_params_in_one_call_under_a_policy() -> None:
    """A CPU param and a CUDA param in one optimizer, bfloat16 state: each device's kernel takes
    its own (no refusal any more), and the CUDA param's step is the one it takes alone."""
    start = seeded_tensors([(5, 3), (7, 13)], 5)
    grads = seeded_grads([(5, 3), (7, 13)], 2, 6)
    ps = [start[0].clone().requires_grad_(), start[1].to("cuda", copy=True).requires_grad_()]
    opt = go.Adafactor(ps, state_dtype=torch.bfloat16, **KW)
    for gs in grads:
        for p, g in zip(ps, gs, strict=True):
            p.grad = g.to(p.device)
        opt.step()
    alone, _ = stepped_on(
        go.Adafactor,
        [start[1]],
        [[gs[1]] for gs in grads],
        "cuda",
        state_dtype=torch.bfloat16,
        **KW,
    )
    assert torch.equal(ps[1].detach(), alone[0].detach())
    cpu_alone, _ = stepped_on(
        go.Adafactor, [start[0]], [[gs[0]] for gs in grads], "cpu", state_dtype=torch.bfloat16, **KW
    )
    assert torch.equal(ps[0].detach(), cpu_alone[0].detach())
