"""gradfuse.optim.Muon under the precision policies (issue 17): 8-bit momentum (Muon8bit),
bfloat16 / float32 momentum state, master weights, Kahan compensation, stochastic rounding, in
the Muon groups and the auxiliary AdamW groups; checkpoints; bad input.

The momentum buffers of another dtype than their gradient's go through a float32 working copy
(functional/_muon.py), which is the sequence a fused pass runs per element: so most checks here
are exact, against float32 Muon whose buffer is stored the same way between steps (quantized
and dequantized with the public 8-bit helpers, or rounded to bfloat16)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from _more_helpers import one_torch_thread

import gradfuse.optim as go
from gradfuse.functional import muon_
from optim_testing import (
    assert_policy_refusals,
    assert_same_state,
    leaves,
    seeded_grads,
    seeded_tensors,
    step_with,
    stochastic_checkpoint_runs,
    unchanged,
)
from tolerances import TRAJECTORY, assert_close

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# Two matrices of at least min_8bit_size (4096) elements, one of the same shape (one batch), a
# conv kernel, and a small matrix that keeps float32 state under 8-bit.
SHAPES = [(64, 128), (96, 64), (64, 128), (32, 8, 4, 4), (12, 7)]
KW: dict[str, Any] = {"lr": 0.02, "weight_decay": 0.1}


def _reference(
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    store: Callable[[torch.Tensor], torch.Tensor],
    **kw: Any,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """float32 Muon whose momentum buffers are replaced by ``store(buffer)`` after each step."""
    params = leaves(start, torch.float32)
    opt = go.Muon(params, **kw)
    for gs in grads:
        step_with(opt, params, gs)
        for p in params:
            st = opt.state[p]
            st["momentum_buffer"] = store(st["momentum_buffer"])
    return params, opt


def _q8_round_trip(min_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def store(buf: torch.Tensor) -> torch.Tensor:
        if buf.numel() < min_size:
            return buf
        return go.dequantize_blockwise(*go.quantize_blockwise(buf))

    return store


def test_8bit_momentum_is_float32_muon_with_a_quantized_buffer() -> None:
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 4)
    params = leaves(start, torch.float32)
    opt = go.Muon8bit(params, **KW)
    for gs in grads:
        step_with(opt, params, gs)
    ref, ref_opt = _reference(start, grads, _q8_round_trip(4096), **KW)
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(p, q)
        st, buf = opt.state[p], ref_opt.state[q]["momentum_buffer"]
        if p.numel() >= 4096:  # the reference holds the dequantized buffer
            assert st["momentum_buffer"].dtype == torch.uint8
            values = go.dequantize_blockwise(st["momentum_buffer"], st["momentum_buffer_absmax"])
            assert torch.equal(values, buf)
        else:  # below min_8bit_size: float32, as bitsandbytes
            assert st["momentum_buffer"].dtype == torch.float32
            assert "momentum_buffer_absmax" not in st
            assert torch.equal(st["momentum_buffer"], buf)
    # state_dtype="8bit" is the same optimizer
    same = leaves(start, torch.float32)
    other = go.Muon(same, state_dtype="8bit", **KW)
    for gs in grads:
        step_with(other, same, gs)
    assert all(torch.equal(p, q) for p, q in zip(params, same, strict=True))


@pytest.mark.parametrize("nesterov", [True, False])
def test_8bit_momentum_tracks_float32_muon(nesterov: bool) -> None:
    # The 8-bit buffer's relative error is ~1%: the trajectory stays near float32 Muon's.
    shapes = [(64, 128)]
    start, grads = seeded_tensors(shapes, 3), seeded_grads(shapes, 30, 4)
    ours, ref = leaves(start, torch.float32), leaves(start, torch.float32)
    opt = go.Muon8bit(ours, nesterov=nesterov, **KW)
    ref_opt = go.Muon(ref, nesterov=nesterov, **KW)
    for gs in grads:
        step_with(opt, ours, gs)
        step_with(ref_opt, ref, gs)
    moved = (ref[0] - start[0]).abs().mean().item()
    assert moved > 0.05
    assert (ours[0] - ref[0]).abs().mean().item() < 0.05 * moved


def test_bfloat16_momentum_is_float32_muon_with_a_rounded_buffer() -> None:
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 4)
    params = leaves(start, torch.float32)
    opt = go.Muon(params, state_dtype=torch.bfloat16, **KW)
    for gs in grads:
        step_with(opt, params, gs)
    ref, ref_opt = _reference(start, grads, lambda b: b.to(torch.bfloat16).to(torch.float32), **KW)
    for p, q in zip(params, ref, strict=True):
        buf = opt.state[p]["momentum_buffer"]
        assert buf.dtype == torch.bfloat16
        assert torch.equal(buf.float(), ref_opt.state[q]["momentum_buffer"])
        assert torch.equal(p, q)


@pytest.mark.parametrize("state_dtype", [None, torch.float32])
def test_master_weights_are_the_float32_run(state_dtype: torch.dtype | None) -> None:
    # bfloat16 params with master weights: the master copy follows float32 Muon exactly (with
    # the buffer kept as this policy keeps it), the param is its bfloat16 rounding.
    start = [s.to(torch.bfloat16).float() for s in seeded_tensors(SHAPES)]
    grads = [[g.to(torch.bfloat16).float() for g in gs] for gs in seeded_grads(SHAPES, 4)]
    params = leaves(start, torch.bfloat16)
    opt = go.Muon(params, master_weights=True, state_dtype=state_dtype, **KW)
    for gs in grads:
        step_with(opt, params, gs)
    if state_dtype is None:  # bfloat16 buffers, as the params
        ref, _ = _reference(start, grads, lambda b: b.to(torch.bfloat16).float(), **KW)
    else:
        ref, _ = _reference(start, grads, lambda b: b, **KW)
    for p, q in zip(params, ref, strict=True):
        st = opt.state[p]
        want = torch.bfloat16 if state_dtype is None else torch.float32
        assert st["momentum_buffer"].dtype == want
        assert torch.equal(st["master_param"], q)
        assert torch.equal(p, q.to(torch.bfloat16))


def test_float16_params_with_float32_momentum_follow_the_float32_run() -> None:
    # float16 params, float32 buffers and master weights: the Newton-Schulz input is rounded to
    # bfloat16 straight from float32 (as in the float32 run), and the orthogonalised update is
    # handed to the float16 apply pass as float16. bfloat16 -> float16 is exact except for
    # values under float16's normal range (2^-14), which keep fewer bits: a difference of
    # lr * 2^-24 at most per step, far inside the float32 trajectory tolerance.
    start = [s.to(torch.float16).float() for s in seeded_tensors(SHAPES)]
    grads = [[g.to(torch.float16).float() for g in gs] for gs in seeded_grads(SHAPES, 4)]
    params = leaves(start, torch.float16)
    opt = go.Muon(params, master_weights=True, state_dtype=torch.float32, **KW)
    for gs in grads:
        step_with(opt, params, gs)
    ref, ref_opt = _reference(start, grads, lambda b: b, **KW)
    for p, q in zip(params, ref, strict=True):
        st = opt.state[p]
        assert st["momentum_buffer"].dtype == torch.float32
        assert torch.equal(st["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])
        assert_close(st["master_param"], q.detach(), TRAJECTORY[torch.float32])
        assert torch.equal(p, st["master_param"].to(torch.float16))


def test_8bit_momentum_with_master_weights_for_bfloat16_params() -> None:
    start = [s.to(torch.bfloat16).float() for s in seeded_tensors(SHAPES)]
    grads = [[g.to(torch.bfloat16).float() for g in gs] for gs in seeded_grads(SHAPES, 3)]
    params = leaves(start, torch.bfloat16)
    opt = go.Muon8bit(params, master_weights=True, **KW)
    for gs in grads:
        step_with(opt, params, gs)
    ref, _ = _reference(start, grads, _q8_round_trip(4096), **KW)
    for p, q in zip(params, ref, strict=True):
        assert torch.equal(opt.state[p]["master_param"], q)
        assert torch.equal(p, q.to(torch.bfloat16))


def test_kahan_and_stochastic_rounding_keep_small_updates() -> None:
    # Updates of ~lr / 8 = 1e-4 against O(1) weights (bfloat16 spacing 2^-8..2^-7): plain
    # bfloat16 rounds nearly every one away; Kahan compensation keeps them, stochastic rounding
    # keeps them on average (a random walk of about sqrt(steps * update * spacing)).
    shapes = [(64, 64)]
    start = [s.to(torch.bfloat16).float() for s in seeded_tensors(shapes, 5)]
    gen = torch.Generator().manual_seed(6)
    drift = torch.randn(64, 64, generator=gen)
    grads = [[(drift + 0.3 * torch.randn(64, 64, generator=gen)).to(torch.bfloat16).float()]]
    grads = grads * 200
    kw = {"lr": 1e-3, "weight_decay": 0.0, "ns_dtype": torch.float32}
    ref = _reference(start, grads, lambda b: b.to(torch.bfloat16).float(), **kw)[0][0]
    expected = ref.detach()

    def error(**options: Any) -> float:
        ps = leaves(start, torch.bfloat16)
        opt = go.Muon(ps, **kw, **options)
        for gs in grads:
            step_with(opt, ps, gs)
        value = ps[0].detach().float()
        if options.get("kahan"):
            value = value + opt.state[ps[0]]["kahan_comp"].float()
        return float((value - expected).abs().mean())

    plain = error()
    moved = float((expected - start[0]).abs().mean())
    assert plain > 0.5 * moved  # the problem really stalls plain bfloat16
    assert error(kahan=True) < 0.02 * moved
    torch.manual_seed(0)
    assert error(rounding="stochastic") < 0.5 * plain  # as test_lowprec_optim.py judges it


def test_stochastic_rounding_checkpoint_continues_the_same_bits() -> None:
    params, nearest = stochastic_checkpoint_runs(
        lambda ps, **kw: go.Muon(ps, **kw, **KW),
        seeded_tensors(SHAPES[:2]),
        seeded_grads(SHAPES[:2], 4),
    )
    # and the bits are really random: not the nearest-rounded run
    assert not torch.equal(params[0], nearest[0])


@pytest.mark.parametrize(
    "options",
    [
        {"state_dtype": torch.uint8},
        {"state_dtype": torch.bfloat16},
        {"master_weights": True},
        {"kahan": True},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_state_dict_round_trip_is_exact(options: dict[str, Any]) -> None:
    dtype = torch.float32 if "state_dtype" in options else torch.bfloat16
    start, grads = seeded_tensors(SHAPES), seeded_grads(SHAPES, 5)
    params = leaves(start, dtype)
    groups = [{"params": params[:-1]}, {"params": params[-1:], "use_muon": False}]
    opt = go.Muon(groups, **KW, **options)
    for gs in grads[:3]:
        step_with(opt, params, gs)
    sd = copy.deepcopy(opt.state_dict())  # as torch.save / torch.load would
    other = [p.detach().clone().requires_grad_(True) for p in params]
    groups2 = [{"params": other[:-1]}, {"params": other[-1:], "use_muon": False}]
    opt2 = go.Muon(groups2, **KW, **options)
    opt2.load_state_dict(sd)
    assert_same_state(opt, params, opt2, other)
    for gs in grads[3:]:
        step_with(opt, params, gs)
        step_with(opt2, other, gs)
    assert all(torch.equal(p, q) for p, q in zip(params, other, strict=True))


def test_torch_checkpoint_into_muon8bit_and_back() -> None:
    start, grads = seeded_tensors(SHAPES[:2]), seeded_grads(SHAPES[:2], 3)
    theirs = leaves(start, torch.float32)
    topt = torch.optim.Muon(theirs, **KW)
    for gs in grads[:2]:
        step_with(topt, theirs, gs)
    ours = leaves([t.detach() for t in theirs], torch.float32)
    opt = go.Muon8bit(ours, **KW)
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    for p, q in zip(ours, theirs, strict=True):
        codes, absmax = go.quantize_blockwise(topt.state[q]["momentum_buffer"])
        assert torch.equal(opt.state[p]["momentum_buffer"], codes)
        assert torch.equal(opt.state[p]["momentum_buffer_absmax"], absmax)
    step_with(opt, ours, grads[2])
    back = torch.optim.Muon(leaves(start, torch.float32), **KW)
    back.load_state_dict(go.dequantize_state_dict(opt.state_dict()))
    for p, q in zip(ours, back.param_groups[0]["params"], strict=True):
        deq = go.dequantize_blockwise(
            opt.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer_absmax"]
        )
        assert torch.equal(back.state[q]["momentum_buffer"], deq)


@pytest.mark.parametrize(
    "options",
    [
        {"state_dtype": torch.uint8},
        {"state_dtype": torch.bfloat16},
        {"master_weights": True},
        {"rounding": "stochastic"},
        {"kahan": True},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_adamw_groups_take_adamw_options(options: dict[str, Any]) -> None:
    dtype = torch.float32 if "state_dtype" in options else torch.bfloat16
    shapes = [(64, 128), (100,), (7, 5)]
    start, grads = seeded_tensors(shapes), seeded_grads(shapes, 4)
    adam_kw: dict[str, Any] = {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05}
    torch.manual_seed(2)
    ours = leaves(start, dtype)
    opt = go.Muon([{"params": ours, "use_muon": False, **adam_kw}], lr=0.02, **options)
    torch.manual_seed(2)
    theirs = leaves(start, dtype)
    ref = go.AdamW(theirs, **adam_kw, **options)
    for gs in grads:
        step_with(opt, ours, gs)
        step_with(ref, theirs, gs)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
        assert opt.state[p].keys() == ref.state[q].keys()
        for k, v in opt.state[p].items():
            assert torch.equal(v, ref.state[q][k]), k


def test_8bit_amp_skip_changes_nothing_and_grad_scale_unscales() -> None:
    start, grads = seeded_tensors(SHAPES[:1]), seeded_grads(SHAPES[:1], 3)
    params = leaves(start, torch.float32)
    opt = go.Muon8bit(params, **KW)
    step_with(opt, params, grads[0])
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    p0 = params[0].detach().clone()
    opt.grad_scale = torch.full((1,), 1024.0)  # type: ignore[attr-defined]
    opt.found_inf = torch.ones(1)  # type: ignore[attr-defined]
    params[0].grad = torch.full_like(p0, float("inf"))
    opt.step()
    assert torch.equal(params[0], p0)
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k]), k
    # A power-of-two scale unscales exactly: the same step as the unscaled gradient.
    opt.found_inf = torch.zeros(1)  # type: ignore[attr-defined]
    ref = leaves([p0], torch.float32)
    ref_opt = go.Muon8bit(ref, **KW)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    params[0].grad = grads[1][0] * 1024.0
    opt.step()
    step_with(ref_opt, ref, grads[1])
    assert torch.equal(params[0], ref[0])
    assert torch.equal(
        opt.state[params[0]]["momentum_buffer"], ref_opt.state[ref[0]]["momentum_buffer"]
    )


# --- bad input ----------------------------------------------------------------------------------


def test_functional_bad_precision_input_writes_nothing() -> None:
    p, g = torch.randn(64, 128), torch.randn(64, 128)
    codes, absmax = go.quantize_blockwise(torch.randn(64, 128))
    bf = torch.randn(64, 128).to(torch.bfloat16)
    same = unchanged([p, codes, absmax, bf])
    with pytest.raises(TypeError, match="no state_absmax"):
        muon_([p], [g], [codes])
    with pytest.raises(ValueError, match="state_absmax"):
        muon_([p], [g], [codes], state_absmax=[[absmax[:5]]])
    t_codes = codes.t().contiguous().t()  # dense, but not laid out as the param
    with pytest.raises(ValueError, match="memory layout"):
        muon_([p], [g], [t_codes], state_absmax=[[absmax]])
    with pytest.raises(TypeError, match="master_params"):
        muon_([p], [g], [torch.zeros_like(p)], master_params=[torch.zeros_like(p)])
    with pytest.raises(TypeError, match=r"kahan_comps\[0\] has dtype bfloat16"):
        muon_([p], [g], [torch.zeros_like(p)], kahan_comps=[bf])
    with pytest.raises(ValueError, match="seed"):
        muon_([p], [g], [torch.zeros_like(p)], rounding="stochastic")
    with pytest.raises(TypeError, match="has dtype float16"):
        muon_([p], [g], [torch.zeros(64, 128, dtype=torch.float16)])
    pb, gb = p.to(torch.bfloat16), g.to(torch.bfloat16)
    same_b = unchanged([pb])
    with pytest.raises(TypeError, match="has dtype float16"):  # 16-bit params: float32 only
        muon_([pb], [gb], [torch.zeros(64, 128, dtype=torch.float16)])
    with pytest.raises(ValueError, match="cannot be combined"):
        muon_([pb], [gb], [bf], master_params=[p.clone()], rounding="stochastic", seed=1)
    assert same()
    assert same_b()


def test_optimizer_refusals_name_the_option() -> None:
    assert_policy_refusals(go.Muon, (8, 8), go.Muon8bit)


def test_bad_checkpoint_into_muon8bit_loads_nothing() -> None:
    params = leaves(seeded_tensors(SHAPES[:1]), torch.float32)
    opt = go.Muon8bit(params, **KW)
    step_with(opt, params, seeded_grads(SHAPES[:1], 1)[0])
    good = opt.state_dict()
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    bad = copy.deepcopy(good)
    bad["state"][0]["momentum_buffer_absmax"] = bad["state"][0]["momentum_buffer_absmax"][:3]
    with pytest.raises(ValueError, match="momentum_buffer_absmax"):
        opt.load_state_dict(bad)
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k]), k


def test_muon8bit_signature_lists_min_8bit_size() -> None:
    import inspect

    names = list(inspect.signature(go.Muon8bit).parameters)
    assert "min_8bit_size" in names
    assert "state_dtype" not in names
    assert "master_weights" in list(inspect.signature(go.Muon).parameters)
