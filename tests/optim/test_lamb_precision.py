"""gradfuse.optim.LAMB under the precision policies (issues 18 and 16): master weights, bfloat16 /
float32 state, 8-bit state (LAMB8bit), stochastic rounding, Kahan compensation; checkpoints,
AMP, param groups, bad input.

The references: float32 LAMB (master weights with float32 state compute exactly what it
computes), and ``_emulate``, LAMB's kernel sequence in float32 torch ops with the state stored
between the passes the way the policy stores it (rounded to bfloat16, or quantized with the
public 8-bit helpers): per element the same operations in the same order, so the state it keeps
is the kernel's bit for bit; only the two norms of the trust ratio are summed in another order
(float64 here), so the params agree to float32 trajectory tolerance."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from _more_helpers import (
    check_amp_skip_then_scaled_step,
    leaves,
    one_torch_thread,
    run_steps,
)

import gradfuse.optim as go
from gradfuse.functional import lamb_
from gradfuse.testing import LAMB as ReferenceLAMB
from optim_testing import (
    CUDA_STORAGES,
    assert_like_cpu,
    assert_policy_refusals,
    assert_same_state,
    assert_state_like_cpu,
    assert_step_like_cpu,
    last_step_on_both,
    stochastic_checkpoint_runs,
    unchanged,
)
from tolerances import TRAJECTORY, assert_close, assert_low_precision

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# Odd sizes, an empty tensor, two above min_8bit_size (4096), one of them over several of the
# kernel's 16K-element blocks (and the threads' grain).
SIZES = (1, 7, 4097, 0, 40_000)
# max_grad_norm=0: no clipping (its global norm is summed in the gradients' dtype).
KW: dict[str, Any] = {"lr": 1e-2, "weight_decay": 0.05, "max_grad_norm": 0.0}

Store = Callable[[torch.Tensor, bool], torch.Tensor]


def _problem(steps: int, sizes: Sequence[int] = SIZES, seed: int = 0) -> tuple[Any, Any]:
    """A start and gradients that bfloat16 holds exactly (so every dtype sees the same values)."""
    gen = torch.Generator().manual_seed(seed)
    start = [(0.5 * torch.randn(n, generator=gen)).to(torch.bfloat16).float() for n in sizes]
    grads = [
        [torch.randn(n, generator=gen).to(torch.bfloat16).float() for n in sizes]
        for _ in range(steps)
    ]
    return start, grads


def _keep(x: torch.Tensor, signed: bool) -> torch.Tensor:
    return x


def _bf16(x: torch.Tensor, signed: bool) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


def _q8(x: torch.Tensor, signed: bool) -> torch.Tensor:
    if x.numel() < 4096:  # below min_8bit_size: float32 state
        return x
    return go.dequantize_blockwise(*go.quantize_blockwise(x, signed), signed)


def _emulate(
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    store: Store,
    lr: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.05,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """LAMB's kernel in float32 torch ops (adam_w_mode, bias correction, the trust ratio where
    ``weight_decay != 0``), the moments stored by ``store`` after the update; returns the params
    and the stored moments."""
    beta1, beta2 = betas
    f32 = functools.partial(torch.tensor, dtype=torch.float32)
    params = [s.clone() for s in start]
    ms = [torch.zeros_like(s) for s in start]
    vs = [torch.zeros_like(s) for s in start]
    for step, gs in enumerate(grads, start=1):
        inv_bc1 = float(f32(1.0 / (1.0 - beta1**step)))
        inv_sqrt_bc2 = float(f32(1.0 / math.sqrt(1.0 - beta2**step)))
        for i, g in enumerate(gs):
            p = params[i]
            m = ms[i] * beta1 + g * (1.0 - beta1)
            v = vs[i] * beta2 + (g * (1.0 - beta2)) * g
            ms[i], vs[i] = store(m, True), store(v, False)
            u = (ms[i] * inv_bc1) / (vs[i].sqrt() * inv_sqrt_bc2 + eps) + p * weight_decay
            pn = float(torch.linalg.vector_norm(p.double()))
            un = float(torch.linalg.vector_norm(u.double()))
            trust = weight_decay != 0.0 and pn != 0.0 and un != 0.0
            ratio = lr * (pn / un) if trust else lr
            params[i] = p - u * float(f32(ratio))
    return params, ms, vs


def _run(make: Callable[[list[torch.Tensor]], Any], start: Any, grads: Any, dtype: torch.dtype):
    params = leaves(start, dtype)
    opt = make(params)
    run_steps(opt, params, grads)
    return params, opt


def _stored(opt: Any, p: torch.Tensor, key: str, signed: bool) -> torch.Tensor:
    """The state ``key`` of ``p`` as float32 values (8-bit codes dequantized)."""
    st = opt.state[p]
    if st[key].dtype == torch.uint8:
        return go.dequantize_blockwise(st[key], st[key + "_absmax"], signed)
    return st[key].float()


def _check_against_emulation(
    opt: Any,
    params: Sequence[torch.Tensor],
    want: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]],
    master: bool = False,
) -> None:
    wp, wm, wv = want
    for i, p in enumerate(params):
        # The moments depend on the gradients only (adam_w_mode): the kernel's, bit for bit.
        assert torch.equal(_stored(opt, p, "exp_avg", True), wm[i]), f"exp_avg {i}"
        assert torch.equal(_stored(opt, p, "exp_avg_sq", False), wv[i]), f"exp_avg_sq {i}"
        value = opt.state[p]["master_param"] if master else p.detach()
        assert_close(value.float(), wp[i], TRAJECTORY[torch.float32], f"param {i}")


# --- exact against float32 LAMB -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("adam_w_mode", [True, False])
def test_master_weights_with_float32_state_are_the_float32_run(
    dtype: torch.dtype, adam_w_mode: bool
) -> None:
    # The float32 master is the param of the math and the state is float32: every operation is
    # the float32 run's, the norms' lanes too, so the master is the float32 param bit for bit
    # and the 16-bit param its rounding.
    start, grads = _problem(6)
    kw = {**KW, "adam_w_mode": adam_w_mode}
    ours, opt = _run(
        lambda ps: go.LAMB(ps, master_weights=True, state_dtype=torch.float32, **kw),
        start,
        grads,
        dtype,
    )
    ref, ref_opt = _run(lambda ps: go.LAMB(ps, **kw), start, grads, torch.float32)
    for p, q in zip(ours, ref, strict=True):
        st, rst = opt.state[p], ref_opt.state[q]
        assert st["exp_avg"].dtype == torch.float32
        assert torch.equal(st["master_param"], q.detach())
        assert torch.equal(p.detach(), q.detach().to(dtype))
        assert torch.equal(st["exp_avg"], rst["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], rst["exp_avg_sq"])


def test_master_weights_are_a_no_op_for_float32_params() -> None:
    start, grads = _problem(4)
    ours, opt = _run(lambda ps: go.LAMB(ps, master_weights=True, **KW), start, grads, torch.float32)
    ref, _ = _run(lambda ps: go.LAMB(ps, **KW), start, grads, torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(ours, ref, strict=True))
    assert all("master_param" not in opt.state[p] for p in ours)


# --- state stored in another dtype, against the emulation --------------------------------------


def test_bfloat16_state_for_float32_params() -> None:
    start, grads = _problem(8)
    ours, opt = _run(
        lambda ps: go.LAMB(ps, state_dtype=torch.bfloat16, **KW), start, grads, torch.float32
    )
    for p in ours:
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
        assert opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
    _check_against_emulation(opt, ours, _emulate(start, grads, _bf16))


def test_master_weights_with_bfloat16_state() -> None:
    # bfloat16 params and (by default) bfloat16 state: the master computes as float32 params
    # with bfloat16 state; the param is the master's rounding.
    start, grads = _problem(8)
    ours, opt = _run(
        lambda ps: go.LAMB(ps, master_weights=True, **KW), start, grads, torch.bfloat16
    )
    _check_against_emulation(opt, ours, _emulate(start, grads, _bf16), master=True)
    for p in ours:
        assert torch.equal(p.detach(), opt.state[p]["master_param"].to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_8bit_state_is_the_emulation_with_quantized_moments(dtype: torch.dtype) -> None:
    # Codes and absmax as the engine's quantizer (quantize_blockwise) gives them for the
    # moments the float32 sequence computes from the dequantized ones; 16-bit params with
    # master weights (the master is the float32 param of the math).
    start, grads = _problem(8)
    master = dtype != torch.float32
    ours, opt = _run(lambda ps: go.LAMB8bit(ps, master_weights=master, **KW), start, grads, dtype)
    want = _emulate(start, grads, _q8)
    _check_against_emulation(opt, ours, want, master=master)
    for p in ours:
        st = opt.state[p]
        if p.numel() >= 4096:
            assert st["exp_avg"].dtype == torch.uint8
            assert st["exp_avg_sq"].dtype == torch.uint8
            assert st["exp_avg_absmax"].shape == (-(-p.numel() // 256),)
        else:  # below min_8bit_size: float32 state, as bitsandbytes
            assert st["exp_avg"].dtype == torch.float32
            assert "exp_avg_absmax" not in st


def test_8bit_first_step_codes_are_the_engine_quantizer_s() -> None:
    # From zero state the first moments are g * (1 - beta1) and (g * (1 - beta2)) * g exactly:
    # their codes and absmax are quantize_blockwise's (the engine's Q8), signed and unsigned.
    start, grads = _problem(1, (4097, 40_000))
    params, opt = _run(lambda ps: go.LAMB8bit(ps, **KW), start, grads, torch.float32)
    for p, g in zip(params, grads[0], strict=True):
        st = opt.state[p]
        for key, value, signed in (
            ("exp_avg", g * (1.0 - 0.9), True),
            ("exp_avg_sq", (g * (1.0 - 0.999)) * g, False),
        ):
            codes, absmax = go.quantize_blockwise(value, signed)
            assert torch.equal(st[key], codes), key
            assert torch.equal(st[key + "_absmax"], absmax), key


STORAGES: list[tuple[torch.dtype, dict[str, Any], Store]] = [
    (torch.bfloat16, {"state_dtype": torch.uint8}, _q8),
    (torch.float16, {"state_dtype": torch.uint8}, _q8),
    (torch.bfloat16, {"state_dtype": torch.uint8, "kahan": True}, _q8),
    (torch.bfloat16, {"state_dtype": torch.uint8, "rounding": "stochastic"}, _q8),
    (torch.float16, {"state_dtype": torch.uint8, "master_weights": True}, _q8),
    (torch.bfloat16, {"state_dtype": torch.float32}, _keep),
    (torch.float16, {"state_dtype": torch.float32}, _keep),
    (torch.bfloat16, {"state_dtype": torch.float32, "kahan": True}, _keep),
    (torch.bfloat16, {"state_dtype": torch.float32, "rounding": "stochastic"}, _keep),
    (torch.bfloat16, {"kahan": True}, _bf16),
    (torch.bfloat16, {"rounding": "stochastic"}, _bf16),
]


@pytest.mark.parametrize(
    ("dtype", "options", "store"),
    STORAGES,
    ids=[f"{d}-" + ",".join(f"{k}={v}" for k, v in o.items()) for d, o, _ in STORAGES],
)
def test_moments_are_the_emulation_s_for_every_storage(
    dtype: torch.dtype, options: dict[str, Any], store: Store
) -> None:
    # adam_w_mode: the moments depend on the gradients only, so whatever the param policy does
    # to the params, the stored moments are the emulation's bit for bit (state rounded to its
    # dtype, or dequantized and requantized per block, by every storage the kernel visits).
    start, grads = _problem(6)
    torch.manual_seed(5)
    params, opt = _run(lambda ps: go.LAMB(ps, **KW, **options), start, grads, dtype)
    _, wm, wv = _emulate(start, grads, store)
    for i, p in enumerate(params):
        assert torch.equal(_stored(opt, p, "exp_avg", True), wm[i]), f"exp_avg {i}"
        assert torch.equal(_stored(opt, p, "exp_avg_sq", False), wv[i]), f"exp_avg_sq {i}"
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
        if p.numel():
            assert not torch.equal(p.detach().float(), start[i]), i  # the params moved


def test_state_dtype_8bit_string_is_lamb8bit() -> None:
    start, grads = _problem(3)
    a, _ = _run(lambda ps: go.LAMB8bit(ps, **KW), start, grads, torch.float32)
    b, _ = _run(lambda ps: go.LAMB(ps, state_dtype="8bit", **KW), start, grads, torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_min_8bit_size() -> None:
    start, grads = _problem(2)
    params, opt = _run(
        lambda ps: go.LAMB8bit(ps, min_8bit_size=5, **KW), start, grads, torch.float32
    )
    dtypes = [opt.state[p]["exp_avg"].dtype for p in params if p.numel()]
    assert dtypes == [torch.float32, torch.uint8, torch.uint8, torch.uint8]


def test_8bit_tracks_float32_lamb_with_apex_defaults() -> None:
    # apex's defaults (clipping at norm 1, weight decay 0.01): the 8-bit moments' ~1% error
    # keeps the trajectory near float32 LAMB's.
    start, grads = _problem(40, (64 * 128,), seed=3)
    ours, _ = _run(lambda ps: go.LAMB8bit(ps, lr=1e-2), start, grads, torch.float32)
    ref, _ = _run(lambda ps: go.LAMB(ps, lr=1e-2), start, grads, torch.float32)
    moved = (ref[0] - start[0]).abs().mean().item()
    assert moved > 0.05
    assert (ours[0] - ref[0]).abs().mean().item() < 0.05 * moved


# --- 16-bit params without master weights --------------------------------------------------------


def test_bfloat16_params_with_float32_state_against_float64() -> None:
    # As every 16-bit trajectory is judged: at most 2x the bfloat16 reference's error.
    start, grads = _problem(30)
    kw = {"lr": 1e-2, "weight_decay": 0.05, "max_grad_norm": 5.0}
    ours, opt = _run(
        lambda ps: go.LAMB(ps, state_dtype=torch.float32, **kw), start, grads, torch.bfloat16
    )
    theirs, _ = _run(lambda ps: ReferenceLAMB(ps, **kw), start, grads, torch.bfloat16)
    ref, _ = _run(lambda ps: ReferenceLAMB(ps, **kw), start, grads, torch.float64)
    assert all(opt.state[p]["exp_avg"].dtype == torch.float32 for p in ours)

    def flat(xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.detach().reshape(-1) for x in xs])

    assert_low_precision(flat(ours), flat(theirs), flat(ref), "bf16 params, f32 state")


def test_kahan_and_stochastic_rounding_keep_small_updates() -> None:
    # Updates of lr = 3e-3 (no weight decay: no trust ratio, |u| <= 1) against weights in [1, 2)
    # (bfloat16 spacing 2^-7, half of it 3.9e-3): plain bfloat16 rounds every one away; Kahan
    # compensation keeps them, stochastic rounding keeps them on average (a random walk of
    # about sqrt(steps * update * spacing)). Judged against the emulation with bfloat16 state.
    gen = torch.Generator().manual_seed(6)
    start = [(1 + torch.rand(64 * 64, generator=gen)).to(torch.bfloat16).float()]
    drift = torch.randn(64 * 64, generator=gen)
    grads = [[(drift + 0.3 * torch.randn(64 * 64, generator=gen)).to(torch.bfloat16).float()]]
    grads = grads * 200
    kw = {"lr": 3e-3, "weight_decay": 0.0, "max_grad_norm": 0.0}
    expected = _emulate(start, grads, _bf16, lr=3e-3, weight_decay=0.0)[0][0]

    def error(**options: Any) -> float:
        ps, opt = _run(lambda ps: go.LAMB(ps, **kw, **options), start, grads, torch.bfloat16)
        value = ps[0].detach().float()
        if options.get("kahan"):
            value = value + opt.state[ps[0]]["kahan_comp"].float()
        return float((value - expected).abs().mean())

    plain = error()
    moved = float((expected - start[0]).abs().mean())
    assert plain > 0.5 * moved  # the problem really stalls plain bfloat16
    assert error(kahan=True) < 0.02 * moved
    torch.manual_seed(0)
    assert error(rounding="stochastic") < 0.5 * plain


def test_stochastic_rounding_checkpoint_continues_the_same_bits() -> None:
    start, grads = _problem(4, (7, 4097))
    params, nearest = stochastic_checkpoint_runs(
        lambda ps, **kw: go.LAMB(ps, **kw, **KW), start, grads
    )
    assert not torch.equal(params[1], nearest[1])  # the bits really are random


# --- checkpoints, groups, AMP --------------------------------------------------------------------

ROUND_TRIP = [
    {"state_dtype": torch.uint8},
    {"state_dtype": torch.bfloat16},
    {"master_weights": True},
    {"master_weights": True, "state_dtype": torch.uint8},
    {"kahan": True},
    {"rounding": "stochastic"},
]


@pytest.mark.parametrize(
    "options", ROUND_TRIP, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
def test_state_dict_round_trip_is_exact(options: dict[str, Any]) -> None:
    sixteen = {"master_weights", "kahan", "rounding"} & options.keys()
    dtype = torch.bfloat16 if sixteen else torch.float32
    start, grads = _problem(5)

    def make(ps: list[torch.Tensor]) -> Any:
        groups = [{"params": ps[:2], "lr": 3e-3}, {"params": ps[2:]}]
        return go.LAMB(groups, **KW, **options)

    torch.manual_seed(4)
    params, opt = _run(make, start, grads[:3], dtype)
    sd = copy.deepcopy(opt.state_dict())  # as torch.save / torch.load would
    other = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = make(other)
    opt2.load_state_dict(sd)
    assert_same_state(opt, params, opt2, other)
    run_steps(opt, params, grads[3:])
    run_steps(opt2, other, grads[3:])
    assert all(torch.equal(p, q) for p, q in zip(params, other, strict=True))


def test_float32_checkpoint_into_lamb8bit_and_back() -> None:
    start, grads = _problem(3, (7, 4097))
    theirs, topt = _run(lambda ps: go.LAMB(ps, **KW), start, grads[:2], torch.float32)
    ours = leaves([t.detach() for t in theirs], torch.float32)
    opt = go.LAMB8bit(ours, **KW)
    opt.load_state_dict(copy.deepcopy(topt.state_dict()))
    big, tbig = ours[1], theirs[1]
    for key, signed in (("exp_avg", True), ("exp_avg_sq", False)):
        codes, absmax = go.quantize_blockwise(topt.state[tbig][key], signed)
        assert torch.equal(opt.state[big][key], codes)
        assert torch.equal(opt.state[big][key + "_absmax"], absmax)
    assert opt.state[ours[0]]["exp_avg"].dtype == torch.float32
    run_steps(opt, ours, grads[2:])
    back = go.LAMB(leaves(start, torch.float32), **KW)
    back.load_state_dict(go.dequantize_state_dict(opt.state_dict()))
    q = back.param_groups[0]["params"][1]
    deq = _stored(opt, big, "exp_avg_sq", False)
    assert torch.equal(back.state[q]["exp_avg_sq"], deq)


@pytest.mark.parametrize(
    "options",
    [{"state_dtype": torch.uint8}, {"master_weights": True}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_param_groups_are_separate_calls(options: dict[str, Any]) -> None:
    # Without clipping (global over the groups) two groups step as two optimizers would.
    dtype = torch.float32 if "state_dtype" in options else torch.bfloat16
    start, grads = _problem(4)
    groups = [{"params": [0, 1, 4], "lr": 3e-3, "weight_decay": 0.0}, {"params": [2, 3]}]

    def split(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{**g, "params": [ps[i] for i in g["params"]]} for g in groups]

    together, _ = _run(lambda ps: go.LAMB(split(ps), **KW, **options), start, grads, dtype)
    for g in groups:
        idx = g["params"]
        own = {**KW, **{k: v for k, v in g.items() if k != "params"}}
        alone, _ = _run(
            lambda ps, own=own: go.LAMB(ps, **own, **options),
            [start[i] for i in idx],
            [[gs[i] for i in idx] for gs in grads],
            dtype,
        )
        for i, p in zip(idx, alone, strict=True):
            assert torch.equal(together[i], p), i


@pytest.mark.parametrize(
    "options",
    [{"state_dtype": torch.uint8}, {"state_dtype": torch.bfloat16}],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_grad_scaler_inf_changes_nothing(options: dict[str, Any]) -> None:
    # float32 params (the helper's): a skipped step changes no param, code, absmax or step;
    # a power-of-two scale unscales exactly.
    start, grads = _problem(3, (1, 7, 4097, 0))
    make = functools.partial(go.LAMB, lr=1e-2, **options)
    check_amp_skip_then_scaled_step(make, make, start, grads, scale=1024.0, bad=float("inf"))


@pytest.mark.parametrize(
    "options", [{"master_weights": True}, {"kahan": True}, {"rounding": "stochastic"}], ids=str
)
def test_grad_scaler_inf_changes_nothing_16bit(options: dict[str, Any]) -> None:
    start, grads = _problem(2, (7, 4097))
    params, opt = _run(lambda ps: go.LAMB(ps, **KW, **options), start, grads[:1], torch.bfloat16)
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    for p, g in zip(params, grads[1], strict=True):
        p.grad = (g * 1024.0).to(torch.bfloat16)
    params[1].grad[3] = float("inf")
    opt.grad_scale = torch.tensor([1024.0])  # type: ignore[attr-defined]
    opt.found_inf = torch.tensor([1.0])  # type: ignore[attr-defined]
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, before, strict=True))
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    for k, s in state["state"].items():
        for key, v in s.items():
            assert torch.equal(after["state"][k][key], v), key


# --- bad input ----------------------------------------------------------------------------------


def test_functional_bad_precision_input_writes_nothing() -> None:
    p, g = torch.randn(4097), torch.randn(4097)
    q, h = torch.randn(7), torch.randn(7)
    m_codes, m_absmax = go.quantize_blockwise(torch.randn(4097), True)
    v_codes, v_absmax = go.quantize_blockwise(torch.rand(4097), False)
    bf = torch.randn(4097).to(torch.bfloat16)
    zeros = torch.zeros(4097)
    same = unchanged([p, q, m_codes, m_absmax, v_codes, v_absmax, bf, zeros])
    kw: dict[str, Any] = {"step": 1}
    with pytest.raises(TypeError, match="no state_absmax"):
        lamb_([p], [g], [m_codes], [v_codes], **kw)
    with pytest.raises(ValueError, match="state_absmax"):
        lamb_([p], [g], [m_codes], [v_codes], state_absmax=[[m_absmax[:5]], [v_absmax]], **kw)
    with pytest.raises(TypeError, match="all of a param's state or none"):
        lamb_([p], [g], [zeros], [v_codes], state_absmax=[[m_absmax], [v_absmax]], **kw)
    with pytest.raises(TypeError, match="master_params"):
        lamb_([p], [g], [zeros], [zeros.clone()], master_params=[p.clone()], **kw)
    with pytest.raises(TypeError, match=r"kahan_comps\[0\] has dtype bfloat16"):
        lamb_([p], [g], [zeros], [zeros.clone()], kahan_comps=[bf], **kw)
    with pytest.raises(ValueError, match="seed"):
        lamb_([p], [g], [zeros], [zeros.clone()], rounding="stochastic", **kw)
    with pytest.raises(TypeError, match="has dtype float16"):
        lamb_([p], [g], [zeros.half()], [zeros.half()], **kw)
    with pytest.raises(TypeError, match="unexpected keyword argument 'state_dtype'"):
        lamb_([p], [g], [zeros], [zeros.clone()], state_dtype=torch.uint8, **kw)
    # A mixed call: the good first param must not have moved when the second is refused.
    with pytest.raises(TypeError, match=r"exp_avg_sqs\[1\] has dtype bfloat16"):
        lamb_(
            [q, p],
            [h, g],
            [torch.zeros(7), zeros],
            [torch.zeros(7), bf],
            **kw,
        )
    pb, gb = p.to(torch.bfloat16), g.to(torch.bfloat16)
    same_b = unchanged([pb])
    with pytest.raises(ValueError, match="cannot be combined"):
        lamb_(
            [pb],
            [gb],
            [bf],
            [bf.clone()],
            master_params=[p.clone()],
            rounding="stochastic",
            seed=1,
            **kw,
        )
    with pytest.raises(TypeError, match=r"has dtype float16"):  # 16-bit params: float32 state only
        lamb_([pb], [gb], [zeros.half()], [zeros.half()], **kw)
    pd, gd = p.double(), g.double()
    with pytest.raises(TypeError, match="8-bit state needs float32/float16/bfloat16 params"):
        lamb_([pd], [gd], [m_codes], [v_codes], state_absmax=[[m_absmax], [v_absmax]], **kw)
    assert same()
    assert same_b()


def test_functional_8bit_step_matches_the_optimizer() -> None:
    # The functional with codes and absmax lists is what LAMB8bit calls.
    start, grads = _problem(2, (4097,))
    params, opt = _run(lambda ps: go.LAMB8bit(ps, **KW), start, grads, torch.float32)
    p = start[0].clone()
    m_codes, m_absmax = go.quantize_blockwise(torch.zeros(4097), True)
    v_codes, v_absmax = go.quantize_blockwise(torch.zeros(4097), False)
    for step, gs in enumerate(grads, start=1):
        lamb_(
            [p],
            [gs[0]],
            [m_codes],
            [v_codes],
            step=step,
            lr=1e-2,
            weight_decay=0.05,
            state_absmax=[[m_absmax], [v_absmax]],
        )
    assert torch.equal(p, params[0].detach())
    assert torch.equal(m_codes, opt.state[params[0]]["exp_avg"])
    assert torch.equal(v_absmax, opt.state[params[0]]["exp_avg_sq_absmax"])


def test_optimizer_refusals_name_the_option() -> None:
    assert_policy_refusals(go.LAMB, (8,), go.LAMB8bit)
    f32 = [torch.randn(8, requires_grad=True)]
    with pytest.raises(ValueError, match=r"state_dtype must be None"):
        go.LAMB(f32, state_dtype=torch.float16)
    with pytest.raises(ValueError, match="min_8bit_size"):
        go.LAMB8bit(f32, min_8bit_size=-1)


@pytest.mark.parametrize("corrupt", ["short", "nan", "negative", "codes"])
def test_corrupt_checkpoint_into_lamb8bit_loads_nothing(corrupt: str) -> None:
    start, grads = _problem(1, (4097,))
    params, opt = _run(lambda ps: go.LAMB8bit(ps, **KW), start, grads, torch.float32)
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    bad = copy.deepcopy(opt.state_dict())
    st = bad["state"][0]
    if corrupt == "short":
        st["exp_avg_absmax"] = st["exp_avg_absmax"][:3]
    elif corrupt == "nan":
        st["exp_avg_sq_absmax"][2] = float("nan")
    elif corrupt == "negative":
        st["exp_avg_absmax"][0] = -1.0
    else:
        st["exp_avg"] = st["exp_avg"][:100]
    with pytest.raises(ValueError, match="exp_avg"):
        opt.load_state_dict(bad)
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k]), k


def test_signatures() -> None:
    import inspect

    lamb = list(inspect.signature(go.LAMB).parameters)
    assert lamb[-4:] == ["master_weights", "state_dtype", "rounding", "kahan"]
    names = list(inspect.signature(go.LAMB8bit).parameters)
    assert "min_8bit_size" in names
    assert "state_dtype" not in names
    assert "LAMB8bit" in go.__all__


# Every storage policy, and LAMB's 8-bit state (its moments requantized in pass 1).
LAMB_CUDA_STORAGES = [
    *CUDA_STORAGES,
    (torch.float32, {"state_dtype": torch.uint8}),
    (torch.float32, {"state_dtype": torch.uint8, "adam_w_mode": False}),
    (torch.float16, {"master_weights": True, "state_dtype": torch.uint8}),
]


@pytest.mark.cuda
@pytest.mark.parametrize(("dtype", "options"), LAMB_CUDA_STORAGES, ids=str)
def test_cuda_storage_step_is_the_cpu_kernels(dtype: torch.dtype, options: dict[str, Any]) -> None:
    """The CUDA kernels under each storage policy (cuda/lamb.cu, lamb_stored): from a CPU run's
    state, one step on CUDA is the CPU kernel's step (optim_testing's CUDA helpers: the norms
    add in another order, and nvcc contracts multiply-adds)."""
    start, grads = _problem(3)
    start = [x.to(dtype) for x in start]
    kw = {**KW, **options}
    moved, state, ours, opt_cuda, theirs, opt_cpu = last_step_on_both(go.LAMB, start, grads, **kw)
    assert_state_like_cpu(opt_cuda, opt_cpu, skip=("master_param", "kahan_comp"))
    cuda_states = list(opt_cuda.state.values())
    for i, (st, ref) in enumerate(zip(cuda_states, opt_cpu.state.values(), strict=True)):
        # LAMB's step comes from the moments as stored: where the CUDA run stored a neighbouring
        # moment (which assert_state_like_cpu allows for a few elements), that element's step
        # moves with it. Such elements are judged against their step's size, the others as
        # every CUDA result.
        flipped = torch.zeros(moved[i].shape, dtype=torch.bool)
        for key in ("exp_avg", "exp_avg_sq"):
            flipped |= (st[key].cpu() != ref[key]).reshape(moved[i].shape)
        old = state["state"][i]
        pairs = [(ours[i].detach().cpu(), theirs[i].detach(), moved[i])]
        if "master_param" in st:
            pairs.append((st["master_param"].cpu(), ref["master_param"], old["master_param"]))
        for got, want, before in pairs:
            assert_like_cpu(got[~flipped], want[~flipped], f"param {i}")
            assert_step_like_cpu(got[flipped], want[flipped], before[flipped], f"param {i}")
        if "kahan_comp" in st:
            # The param and its compensation together: the param's rounding may differ where
            # its compensation takes up the difference (optim_testing's kahan_comp rule).
            got = ours[i].detach().cpu().double() + st["kahan_comp"].cpu().double()
            want = theirs[i].detach().double() + ref["kahan_comp"].double()
            before = moved[i].double() + old["kahan_comp"].double()
            tight = (got - want).abs() <= want.abs() * 2**-14 + 1e-30
            assert tight[~flipped].all(), i
            assert_step_like_cpu(got[flipped], want[flipped], before[flipped], f"kahan {i}")


@pytest.mark.cuda
def test_cuda_found_inf_changes_nothing_under_a_policy() -> None:
    # The Python layer reads found_inf on the host and makes no call (the kernels' own check is
    # the one every CUDA kernel shares, skipped(), reached by the binding-level tests).
    p = torch.randn(5000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    opt = go.LAMB8bit([p], master_weights=True, **KW)
    p.grad = torch.randn_like(p)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[p].items()}
    p0 = p.detach().clone()
    p.grad = torch.randn_like(p)
    opt.grad_scale = torch.ones(1, device="cuda")  # type: ignore[attr-defined]
    opt.found_inf = torch.ones(1, device="cuda")  # type: ignore[attr-defined]
    opt.step()
    assert torch.equal(p, p0)
    for k, v in opt.state[p].items():
        assert torch.equal(v, before[k]), k


def test_8bit_checkpoint_keeps_float32_state_of_small_16bit_params() -> None:
    # Under 8-bit state, 16-bit params below min_8bit_size keep float32 state; torch's
    # load_state_dict casts it to the param's dtype and the policy puts it back (every 8-bit
    # optimizer: AdamW8bit shown beside LAMB8bit).
    start, grads = _problem(3, (7, 4097))
    for cls in (go.LAMB8bit, go.AdamW8bit):
        params, opt = _run(
            lambda ps, cls=cls: cls(ps, master_weights=True), start, grads, torch.bfloat16
        )
        assert opt.state[params[0]]["exp_avg"].dtype == torch.float32
        other = [p.detach().clone().requires_grad_(True) for p in params]
        opt2 = cls(other, master_weights=True)
        opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
        for p, q in zip(params, other, strict=True):
            for k, v in opt.state[p].items():
                assert v.dtype == opt2.state[q][k].dtype, (cls.__name__, k)
                assert torch.equal(v, opt2.state[q][k]), (cls.__name__, k)
