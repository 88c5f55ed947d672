"""Low-precision options of the optimizers (issue 8): master weights, state dtype, stochastic
rounding, Kahan compensation, on every gradfuse optimizer, their state_dict round trips and
their errors."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch

import gradfuse.optim as go
import tolerances
from gradfuse.functional import adamw_, sgd_

SHAPES = ((7,), (4097,), (3, 5), (1,))

# Each gradfuse optimizer with hyperparameters that exercise its options, and the torch class.
OPTIMIZERS: dict[str, tuple[Callable[..., torch.optim.Optimizer], Any, dict[str, Any]]] = {
    "SGD": (go.SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-2}),
    "Adam": (go.Adam, torch.optim.Adam, {"lr": 1e-3, "weight_decay": 1e-2, "amsgrad": True}),
    "AdamW": (go.AdamW, torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2}),
    "Adamax": (go.Adamax, torch.optim.Adamax, {"lr": 1e-3, "weight_decay": 1e-2}),
    "NAdam": (go.NAdam, torch.optim.NAdam, {"lr": 1e-3, "weight_decay": 1e-2}),
    "RAdam": (go.RAdam, torch.optim.RAdam, {"lr": 1e-3, "weight_decay": 1e-2}),
    "Adagrad": (go.Adagrad, torch.optim.Adagrad, {"lr": 1e-2, "weight_decay": 1e-2}),
    "RMSprop": (
        go.RMSprop,
        torch.optim.RMSprop,
        {"lr": 1e-3, "momentum": 0.9, "centered": True, "weight_decay": 1e-2},
    ),
    "Lion": (go.Lion, None, {"lr": 1e-4, "weight_decay": 1e-2}),
}

POLICIES: dict[str, dict[str, Any]] = {
    "master": {"master_weights": True},
    "master_f32_state": {"master_weights": True, "state_dtype": torch.float32},
    "f32_state": {"state_dtype": torch.float32},
    "stochastic": {"rounding": "stochastic"},
    "stochastic_f32_state": {"rounding": "stochastic", "state_dtype": torch.float32},
    "kahan": {"kahan": True},
}


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    return [torch.randn(s, dtype=torch.float64).to(dtype).requires_grad_(True) for s in SHAPES]


def _grads(params: list[torch.Tensor], steps: int) -> list[list[torch.Tensor]]:
    return [[torch.randn(p.shape).to(p.dtype) for p in params] for _ in range(steps)]


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: Any) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()


def _state_tensors(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in opt.state[p].items()
        if torch.is_tensor(v) and v.shape == p.shape and k not in ("master_param", "kahan_comp")
    }


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_every_policy(name: str, policy: str) -> None:
    cls, _, hyper = OPTIMIZERS[name]
    options = POLICIES[policy]
    params = _params(torch.bfloat16)
    before = [p.detach().clone() for p in params]
    opt = cls(params, **hyper, **options)
    _run(opt, params, _grads(params, 4))
    # Updates of ~lr may all round away on a tiny tensor (that is the point of the policies),
    # but not on the 4097 elements of the largest one.
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    for p in params:
        assert p.dtype == torch.bfloat16
        assert bool(torch.isfinite(p).all())
        state = opt.state[p]
        want = options.get("state_dtype", torch.bfloat16)
        tensors = _state_tensors(opt, p)
        assert tensors, "no state tensors"
        for key, value in tensors.items():
            assert value.dtype == want, (key, value.dtype)
        if options.get("master_weights"):
            master = state["master_param"]
            assert master.dtype == torch.float32
            assert torch.equal(master.to(torch.bfloat16), p.detach())
        else:
            assert "master_param" not in state
        if options.get("kahan"):
            assert state["kahan_comp"].dtype == torch.bfloat16
            assert bool(state["kahan_comp"].ne(0).any())


def _fp32_reference(
    torch_cls: Any, hyper: dict[str, Any], params: list[torch.Tensor], grads: Any
) -> list[torch.Tensor]:
    ref = [p.detach().float().clone().requires_grad_(True) for p in params]
    opt = torch_cls(ref, **hyper, foreach=False)
    _run(opt, ref, [[g.float() for g in step] for step in grads])
    return [r.detach() for r in ref]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_master_weights_track_torch_float32(name: str, dtype: torch.dtype) -> None:
    # With float32 state, the master copy is exactly what torch's float32 optimizer computes
    # from the same (16-bit) gradients: the float32 trajectory contract applies to it.
    cls, torch_cls, hyper = OPTIMIZERS[name]
    params = _params(dtype)
    grads = _grads(params, 30)
    expected = _fp32_reference(torch_cls, hyper, params, grads)
    opt = cls(params, **hyper, master_weights=True, state_dtype=torch.float32)
    _run(opt, params, grads)
    for p, e in zip(params, expected, strict=True):
        master = opt.state[p]["master_param"]
        tolerances.assert_close(master, e, tolerances.TRAJECTORY[torch.float32], name)
        assert torch.equal(p.detach(), master.to(dtype))


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_float32_state_matches_a_float32_state_reference(name: str) -> None:
    # bfloat16 params, float32 state, nearest rounding: each step is torch's float32 step from
    # the bfloat16 param, with float32 state kept across steps, rounded back to bfloat16.
    cls, torch_cls, hyper = OPTIMIZERS[name]
    params = _params(torch.bfloat16)
    grads = _grads(params, 20)
    ref32 = [p.detach().float().clone().requires_grad_(True) for p in params]
    ref_opt = torch_cls(ref32, **hyper, foreach=False)
    ref16 = [p.detach().clone() for p in params]
    for step in grads:
        with torch.no_grad():
            for r32, r16, g in zip(ref32, ref16, step, strict=True):
                r32.copy_(r16.float())
                r32.grad = g.float()
        ref_opt.step()
        for r32, r16 in zip(ref32, ref16, strict=True):
            r16.copy_(r32.detach().to(torch.bfloat16))
    opt = cls(params, **hyper, state_dtype=torch.float32)
    _run(opt, params, grads)
    for p, r in zip(params, ref16, strict=True):
        # The float32 steps agree to a few float32 ulps, so a rounding to bfloat16 may land on
        # the other neighbour where the float32 value sits on a midpoint: at most one bfloat16
        # spacing apart, and rarely.
        diff = (p.detach().float() - r.float()).abs()
        spacing = r.float().abs() * 2.0**-7 + 1e-30
        assert bool((diff <= spacing).all()), name
        assert float((diff > 0).double().mean()) < 0.01, name
    for p, r in zip(params, ref32, strict=True):
        for key, value in _state_tensors(opt, p).items():
            theirs = ref_opt.state[r][key]
            assert value.dtype == torch.float32
            tolerances.assert_close(value, theirs, tolerances.FLOAT32_STATE_OF_BFLOAT16, key)


def test_lowprec_lands_closer_to_float32_than_plain_bfloat16() -> None:
    # Updates of ~lr = 1e-4 against O(1) weights (bfloat16 spacing 2^-8..2^-7): plain bfloat16
    # rounds nearly every one away. Master weights and Kahan keep them; stochastic rounding
    # keeps them on average, with a random-walk error of about sqrt(steps * lr * spacing),
    # well under the lost drift of steps * lr = 0.08 here.
    torch.manual_seed(0)
    params = [torch.randn(5000).to(torch.bfloat16).requires_grad_(True)]
    grads = [[(torch.randn(5000) * 0.2 + 1).to(torch.bfloat16)] for _ in range(800)]
    hyper = {"lr": 1e-4, "weight_decay": 0.0}
    expected = _fp32_reference(torch.optim.AdamW, hyper, params, grads)[0]

    def error(**options: Any) -> float:
        ps = [params[0].detach().clone().requires_grad_(True)]
        _run(go.AdamW(ps, **hyper, **options), ps, grads)
        return float((ps[0].detach().float() - expected).abs().mean())

    plain = error()
    assert plain > 0.02  # the problem really stalls plain bfloat16
    for policy, options in POLICIES.items():
        if policy == "f32_state":
            continue  # float32 state alone still rounds every update to nearest
        assert error(**options) < 0.5 * plain, policy


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("name", ["SGD", "AdamW", "Adagrad", "RMSprop", "Lion"])
def test_state_dict_round_trip(name: str, policy: str) -> None:
    cls, _, hyper = OPTIMIZERS[name]
    options = POLICIES[policy]
    params = _params(torch.bfloat16)
    grads = _grads(params, 6)
    opt = cls(params, **hyper, **options)
    _run(opt, params, grads[:3])
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    torch.manual_seed(12345)  # the copy must not depend on the generator: its seed is loaded
    other = cls(copies, **hyper, **options)
    buf.seek(0)
    other.load_state_dict(torch.load(buf))
    for p, q in zip(params, copies, strict=True):
        for key, value in opt.state[p].items():
            if torch.is_tensor(value):
                assert other.state[q][key].dtype == value.dtype, key
                assert torch.equal(other.state[q][key], value), key
    _run(opt, params, grads[3:])
    _run(other, copies, grads[3:])
    for p, q in zip(params, copies, strict=True):
        assert torch.equal(p.detach().view(torch.int16), q.detach().view(torch.int16))


def test_torch_checkpoint_into_master_weights() -> None:
    params = _params(torch.bfloat16)
    grads = _grads(params, 3)
    theirs = torch.optim.AdamW(params, lr=1e-3)
    _run(theirs, params, grads)
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    ours = go.AdamW(copies, lr=0.0, weight_decay=0.0, master_weights=True)
    ours.load_state_dict(theirs.state_dict())
    for group in ours.param_groups:
        group["lr"], group["weight_decay"] = 0.0, 0.0
    _run(ours, copies, grads[:1])  # lr 0: the master copy is created and stays the param
    for q in copies:
        master = ours.state[q]["master_param"]
        assert master.dtype == torch.float32
        assert torch.equal(master, q.detach().float())
    # ... and a gradfuse checkpoint with master copies loads into torch's optimizer.
    back = torch.optim.AdamW(copies, lr=1e-3)
    back.load_state_dict(ours.state_dict())
    _run(back, copies, grads[1:])


def test_master_weights_is_a_no_op_for_float32_params() -> None:
    params = _params(torch.float32)
    copies = [p.detach().clone().requires_grad_(True) for p in params]
    grads = _grads(params, 5)
    a = go.AdamW(params, lr=1e-3, master_weights=True)
    b = go.AdamW(copies, lr=1e-3)
    _run(a, params, grads)
    _run(b, copies, grads)
    for p, q in zip(params, copies, strict=True):
        assert torch.equal(p, q)
        assert "master_param" not in a.state[p]


def test_master_weights_with_mixed_param_dtypes() -> None:
    p16 = torch.randn(33).to(torch.bfloat16).requires_grad_(True)
    p32 = torch.randn(17).requires_grad_(True)
    opt = go.Adam([p16, p32], lr=1e-3, master_weights=True)
    _run(opt, [p16, p32], _grads([p16, p32], 3))
    assert opt.state[p16]["master_param"].dtype == torch.float32
    assert "master_param" not in opt.state[p32]
    assert torch.equal(opt.state[p16]["master_param"].to(torch.bfloat16), p16.detach())


@pytest.mark.parametrize(
    ("options", "dtype", "match"),
    [
        ({"rounding": "stochastic", "kahan": True}, torch.bfloat16, "cannot be combined"),
        ({"master_weights": True, "kahan": True}, torch.bfloat16, "cannot be combined"),
        (
            {"master_weights": True, "rounding": "stochastic"},
            torch.bfloat16,
            "cannot be combined",
        ),
        ({"rounding": "stochastic"}, torch.float32, "needs bfloat16 params"),
        ({"kahan": True}, torch.float16, "needs bfloat16 params"),
        ({"rounding": "up"}, torch.bfloat16, "rounding must be"),
        ({"state_dtype": torch.float16}, torch.bfloat16, "state_dtype must be"),
        ({"state_dtype": torch.bfloat16}, torch.float16, "not available"),
        ({"state_dtype": torch.float32}, torch.float64, "not available"),
    ],
)
def test_invalid_combinations_are_refused(
    options: dict[str, Any], dtype: torch.dtype, match: str
) -> None:
    for cls, _, hyper in OPTIMIZERS.values():
        with pytest.raises(ValueError, match=match):
            cls(_params(dtype), **hyper, **options)


@pytest.mark.parametrize(
    ("options", "dtype", "match"),
    [
        ({"kahan": True}, torch.float32, "needs bfloat16 params"),
        ({"state_dtype": torch.bfloat16}, torch.float64, "not available"),
        ({"state_dtype": torch.uint8}, torch.float64, "8-bit state"),
    ],
)
def test_add_param_group_checks_the_policy(
    options: dict[str, Any], dtype: torch.dtype, match: str
) -> None:
    """A param the constructor would refuse is refused by add_param_group too, before the group
    joins (it used to join, and the next step raised after stepping the groups before it)."""
    for cls, _, hyper in OPTIMIZERS.values():
        ok = _params(torch.bfloat16 if "kahan" in options else torch.float32)
        opt = cls(ok, **hyper, **options)
        with pytest.raises(ValueError, match=match):
            opt.add_param_group({"params": (p for p in _params(dtype))})
        assert len(opt.param_groups) == 1
        opt.add_param_group({"params": (p for p in _params(ok[0].dtype))})  # a generator
        assert len(opt.param_groups) == 2
        assert len(opt.param_groups[1]["params"]) == len(ok)


def test_policy_options_are_read_only() -> None:
    for cls, _, hyper in OPTIMIZERS.values():
        opt = cls(_params(torch.float32), **hyper, state_dtype=torch.bfloat16)
        for name, value in (("state_dtype", None), ("kahan", True), ("master_weights", True)):
            with pytest.raises(AttributeError, match=f"{name} is read-only"):
                setattr(opt, name, value)
        assert opt.state_dtype is torch.bfloat16
        assert opt.kahan is False


def test_functional_refusals_write_nothing() -> None:
    p = torch.randn(9).to(torch.bfloat16)
    g = torch.randn(9).to(torch.bfloat16)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    step = torch.tensor(0.0)
    before = [t.clone() for t in (p, m, v, step)]
    bad_calls: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"master_params": [torch.zeros(9, dtype=torch.float16)]}, TypeError, "float32"),
        ({"master_params": [p.float()], "rounding": "stochastic", "seed": 1}, ValueError, "cannot"),
        ({"rounding": "stochastic"}, ValueError, "needs seed"),
        ({"kahan_comps": [torch.zeros(9)]}, TypeError, "dtype"),
    ]
    for kwargs, error, match in bad_calls:
        with pytest.raises(error, match=match):
            adamw_([p], [g], [m], [v], state_steps=[step], **kwargs)
        for t, b in zip((p, m, v, step), before, strict=True):
            assert torch.equal(t, b)
    # State of a dtype the engines do not keep (float16 state for float32 params) is refused.
    p32 = torch.randn(9)
    with pytest.raises(TypeError, match="float32 state for float16/bfloat16"):
        sgd_([p32], [torch.randn(9)], [torch.zeros(9, dtype=torch.float16)], lr=0.1, momentum=0.9)


def test_functional_float32_params_with_bfloat16_state() -> None:
    # torch's fused CUDA rule (float32 params, bfloat16 state) on any device.
    p = torch.randn(1001)
    m, v = torch.zeros(1001, dtype=torch.bfloat16), torch.zeros(1001, dtype=torch.bfloat16)
    ref_p, ref_m, ref_v = p.clone(), torch.zeros(1001), torch.zeros(1001)
    step, ref_step = torch.tensor(0.0), torch.tensor(0.0)
    for _ in range(3):
        g = torch.randn(1001)
        adamw_([p], [g], [m], [v], state_steps=[step], lr=1e-2)
        adamw_([ref_p], [g], [ref_m], [ref_v], state_steps=[ref_step], lr=1e-2)
        ref_m.copy_(ref_m.to(torch.bfloat16))
        ref_v.copy_(ref_v.to(torch.bfloat16))
    assert float(step) == float(ref_step) == 3.0  # the bias corrections of steps 1, 2 and 3
    assert m.dtype == torch.bfloat16
    # One rule: the kernel reads the bfloat16 state, computes in float32 and rounds the new
    # state to bfloat16, which is what the reference does around its float32 state; the update
    # of p uses the unrounded values in both. So nothing differs, to the bit.
    assert torch.equal(m.float(), ref_m)
    assert torch.equal(v.float(), ref_v)
    assert torch.equal(p, ref_p)


@pytest.mark.cuda
@pytest.mark.parametrize("policy", list(POLICIES))
def test_cuda_matches_cpu(policy: str) -> None:
    # Same rule, same random bits (the counter-based hash): CPU and CUDA agree to a few ulp of
    # the float32 update; stochastic rounding may then differ by one bfloat16 spacing where the
    # float32 values differ across a rounding threshold (rare).
    options = POLICIES[policy]
    params = _params(torch.bfloat16)
    grads = _grads(params, 5)
    cpu = [p.detach().clone().requires_grad_(True) for p in params]
    gpu = [p.detach().cuda().requires_grad_(True) for p in params]
    torch.manual_seed(3)
    a = go.AdamW(cpu, lr=1e-3, **options)
    torch.manual_seed(3)
    b = go.AdamW(gpu, lr=1e-3, **options)
    _run(a, cpu, grads)
    _run(b, gpu, [[g.cuda() for g in step] for step in grads])
    for p, q in zip(cpu, gpu, strict=True):
        diff = (p.detach().float() - q.detach().cpu().float()).abs()
        assert bool((diff <= p.detach().float().abs() * 2.0**-7 + 1e-30).all())
        assert float((diff > 0).double().mean()) < 0.01
