"""Property-based tests (hypothesis) for every optimizer and loss in the registry, against torch
in the same dtype: random shapes (empty, 0-d, odd), dtypes, option combinations, learning
rates, step counts and values, including huge and tiny (subnormal) magnitudes, signed zeros,
NaN and +-inf.

NaN and +-inf must come out exactly where torch puts them; finite values agree within the
tolerance table (float32/float64: tolerances.TRAJECTORY, relative to the magnitudes that went
into each element so that a cancellation is not mistaken for an error; float16/bfloat16:
tolerances.assert_low_precision against a float64 run).

Examples are derandomized (the same examples on every run, so CI is reproducible) and few per
op, to keep the file well under a minute.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_registry import (
    LOSSES,
    OPTIMIZERS,
    LossSpec,
    OptimSpec,
    require_class,
    torch_loss_and_grad,
)

import tolerances

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

shapes = st.lists(st.lists(st.integers(0, 9), max_size=3).map(tuple), min_size=1, max_size=3)


@st.composite
def value_mix(draw: Any) -> dict[str, float]:
    """How often each special kind of value appears (0 for most examples: plain values)."""
    special = draw(st.booleans())
    if not special:
        return {}
    return {
        k: draw(st.sampled_from([0.0, 0.05, 0.3])) for k in ("nan", "inf", "huge", "tiny", "zero")
    }


def inject(x: torch.Tensor, mix: dict[str, float], g: torch.Generator) -> torch.Tensor:
    """``x`` with some elements replaced by special values, exactly representable in its dtype."""
    dtype, shape = x.dtype, x.shape
    info = torch.finfo(dtype)
    # "Huge" stays below max^(1/4) so squares and sums of squares of it are finite in dtype:
    # overflow is then a property of the op's inputs (inf), not of a differently ordered sum.
    specials = {
        "nan": float("nan"),
        "inf": float("inf"),
        "huge": info.max**0.25 / 2,
        "tiny": info.tiny / 4,  # a subnormal
        "zero": 0.0,
    }
    out = x.double()
    for kind, p in mix.items():
        if p == 0.0 or x.numel() == 0:
            continue
        mask = torch.rand(shape, generator=g) < p
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0).double()
        out = torch.where(mask, specials[kind] * sign, out)
    return out.to(dtype)


def fill(
    shape: tuple[int, ...], dtype: torch.dtype, mix: dict[str, float], g: torch.Generator
) -> torch.Tensor:
    """Random normal values with some replaced by special ones (see :func:`inject`)."""
    return inject(torch.randn(shape, dtype=torch.float64, generator=g).to(dtype), mix, g)


def _kind(t: torch.Tensor) -> torch.Tensor:
    """Per element: 0 finite, 1 NaN, 2 +inf, 3 -inf."""
    k = torch.zeros(t.shape, dtype=torch.int8)
    k[t.isnan()] = 1
    k[t == float("inf")] = 2
    k[t == float("-inf")] = 3
    return k


def assert_matches(
    ours: torch.Tensor,
    theirs: torch.Tensor,
    scale: torch.Tensor,
    ref: torch.Tensor | None,
    msg: str,
) -> None:
    """Same NaN/+inf/-inf positions as torch; finite values within the tolerance table.

    In float16/bfloat16, torch rounds every intermediate to the storage type, so it can make an
    inf or NaN of its own (eps = 1e-8 rounds to 0 in float16: a tiny gradient then divides by
    zero) where gradfuse, computing in float32 (DESIGN.md §3), does not: there an element may
    instead agree with torch's float64 result rounded to the dtype, the exact answer.

    ``scale`` (float64, elementwise) is the magnitude of what went into each element: an error
    is measured against it, so that two correctly rounded results of a cancellation (x - y with
    x ~ y) are not told apart by their tiny difference."""
    assert ours.dtype == theirs.dtype, msg
    agree = _kind(ours) == _kind(theirs)
    if ref is not None:
        agree |= _kind(ours) == _kind(ref.to(ours.dtype))
    assert bool(agree.all()), (
        f"{msg}: NaN/inf at different positions\nours {ours}\ntorch {theirs}"
        + (f"\ntorch float64 {ref}" if ref is not None else "")
    )
    finite = ours.isfinite() & theirs.isfinite()
    if ours.dtype in tolerances.LOW_PRECISION_DTYPES:
        assert ref is not None
        keep = finite & ref.to(ours.dtype).isfinite()
        tolerances.assert_low_precision(ours[keep], theirs[keep], ref[keep], msg=msg)
        return
    tol = tolerances.TRAJECTORY[ours.dtype]
    err = (ours[finite].double() - theirs[finite].double()).abs()
    bound = tol.atol + tol.rtol * (scale[finite] + theirs[finite].double().abs())
    bad = err > bound
    assert not bad.any(), (
        f"{msg}: {int(bad.sum())} elements differ beyond rtol {tol.rtol}, atol {tol.atol}: "
        f"ours {ours[finite][bad][:5].tolist()} torch {theirs[finite][bad][:5].tolist()}"
    )


# ---------------------------------------------------------------------------------------------
# Optimizers


def _run(
    cls: Any, kwargs: dict[str, Any], params: list[torch.Tensor], grads: list[list[torch.Tensor]]
) -> list[torch.Tensor]:
    ps = [p.clone().requires_grad_(True) for p in params]
    opt = cls(ps, **kwargs)
    for step in grads:
        for p, g in zip(ps, step, strict=True):
            p.grad = g.to(p.dtype).clone()
        opt.step()
    return [p.detach() for p in ps]


@st.composite
def optim_case(draw: Any, spec: OptimSpec) -> dict[str, Any]:
    config = dict(draw(st.sampled_from(spec.configs)))
    config["lr"] = draw(st.sampled_from([config.get("lr", 1e-3), 1e-4, 0.5, 1.0]))
    if "weight_decay" in config:
        config["weight_decay"] = draw(st.sampled_from([0.0, config["weight_decay"], 0.5]))
    return {
        "dtype": draw(st.sampled_from(DTYPES)),
        "shapes": draw(shapes),
        "steps": draw(st.integers(1, 3)),
        "config": config,
        "mix_p": draw(value_mix()),
        "mix_g": draw(value_mix()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _check_optimizer(spec: OptimSpec, case: dict[str, Any]) -> None:
    cls = require_class(spec)
    dtype, config = case["dtype"], case["config"]
    g = torch.Generator().manual_seed(case["seed"])
    params = [fill(s, dtype, case["mix_p"], g) for s in case["shapes"]]
    grads = [
        [fill(s, dtype, case["mix_g"], g) for s in case["shapes"]] for _ in range(case["steps"])
    ]
    ours = _run(cls, config, params, grads)
    theirs = _run(spec.torch_class(), spec.torch_kwargs(config), params, grads)
    refs: list[Any] = [None] * len(params)
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        refs = _run(
            spec.torch_class(),
            spec.torch_kwargs(config),
            [p.double() for p in params],
            [[x.double() for x in step] for step in grads],
        )
    for i, (a, b, r) in enumerate(zip(ours, theirs, refs, strict=True)):
        scale = params[i].double().abs().nan_to_num(0.0, 0.0, 0.0)
        for step in grads:
            scale = scale + config["lr"] * step[i].double().abs().nan_to_num(0.0, 0.0, 0.0)
        scale = scale + config["lr"] * case["steps"]  # adaptive updates are ~lr per step
        assert_matches(a, b, scale, r, f"{spec.name} {config} {dtype} param {i}")


def _optimizer_test(spec: OptimSpec) -> Any:
    @FUZZ
    @given(case=optim_case(spec))
    def run(case: dict[str, Any]) -> None:
        _check_optimizer(spec, case)

    return run


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_optimizer_matches_torch_on_random_input(spec: OptimSpec) -> None:
    require_class(spec)
    _optimizer_test(spec)()


# ---------------------------------------------------------------------------------------------
# Losses


@st.composite
def loss_case(draw: Any, spec: LossSpec) -> dict[str, Any]:
    if spec.kind in ("class", "kl"):
        shape: tuple[int, ...] = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    else:
        shape = draw(st.lists(st.integers(0, 9), max_size=3).map(tuple))
    return {
        "dtype": draw(st.sampled_from(DTYPES)),
        "shape": shape,
        "config": draw(st.sampled_from(spec.configs)),
        "mix_x": draw(value_mix()),
        "mix_t": draw(value_mix()) if spec.kind != "class" else {},
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _reduce_like(elem: torch.Tensor, x: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
    reduction = config.get("reduction", "mean")
    if reduction == "none":
        return elem
    if reduction == "sum":
        return elem.sum()
    if reduction == "batchmean":
        return elem.sum() / max(x.shape[0], 1)
    return elem.mean()


def _check_loss(spec: LossSpec, case: dict[str, Any]) -> None:
    fn = spec.require_with_grad()
    dtype, config = case["dtype"], case["config"]
    g = torch.Generator().manual_seed(case["seed"])
    x, t = spec.make(case["shape"], dtype, g)
    x = inject(x, case["mix_x"], g)
    if t.is_floating_point():
        t = inject(t, case["mix_t"], g)
    loss, grad = fn(x.clone(), t.clone(), **config)
    loss, grad = torch.as_tensor(loss), torch.as_tensor(grad)
    want_loss, want_grad = torch_loss_and_grad(spec, x, t, config)
    ref_loss = ref_grad = None
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        ref_loss, ref_grad = torch_loss_and_grad(
            spec, x.double(), t.double() if t.is_floating_point() else t, config
        )
    # The scale of the loss is the same reduction over the magnitudes of the per-element losses
    # (kl_div's terms may have either sign); the scale of a gradient element is its inputs'.
    td = t.double() if t.is_floating_point() else t
    elem = spec.torch_fn()(x.double(), td, **{**config, "reduction": "none"}).abs()
    loss_scale = _reduce_like(elem.nan_to_num(0.0, 0.0, 0.0), x, config)
    grad_scale = x.double().abs().nan_to_num(0.0, 0.0, 0.0)
    if t.is_floating_point():
        grad_scale = grad_scale + t.double().abs().nan_to_num(0.0, 0.0, 0.0)
    msg = f"{spec.name} {config} {dtype} {tuple(x.shape)}"
    assert_matches(loss, want_loss, loss_scale, ref_loss, f"{msg} loss")
    assert_matches(grad, want_grad, grad_scale, ref_grad, f"{msg} grad")


def _loss_test(spec: LossSpec) -> Any:
    @FUZZ
    @given(case=loss_case(spec))
    def run(case: dict[str, Any]) -> None:
        _check_loss(spec, case)

    return run


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.id, marks=s.marks("fuzz")) for s in LOSSES])
def test_loss_matches_torch_on_random_input(spec: LossSpec) -> None:
    spec.require_with_grad()
    _loss_test(spec)()


def test_fill_makes_the_special_values_it_promises() -> None:
    # The fuzzing is only as good as its inputs: every special kind does occur.
    g = torch.Generator().manual_seed(0)
    for dtype in DTYPES:
        x = fill((4000,), dtype, dict.fromkeys(("nan", "inf", "huge", "tiny", "zero"), 0.1), g)
        assert x.isnan().any()
        assert (x == float("inf")).any()
        assert (x == float("-inf")).any()
        info = torch.finfo(dtype)
        assert ((x.abs() < info.tiny) & (x != 0)).any(), f"{dtype}: no subnormal"
        assert (x.abs() > info.max**0.25 / 4).any()
        assert (x == 0).any()
