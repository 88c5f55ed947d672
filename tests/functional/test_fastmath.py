"""gradfuse/math/fastmath.h: vexp, vlog, vlog1p (float32) against numpy's float64 functions.

The documented bound is 2 ulp of the correctly rounded float32 result for every float32
input; the sweeps cover every binade densely (and every compiled ISA path), plus special values.
An exhaustive run over all 2^32 floats (done when the functions were written, see the header)
measured at most 0.99 ulp (exp), 0.83 ulp (log) and 0.90 ulp (log1p).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from gradfuse import _native
from tolerances import FASTMATH_ULPS, LIBM_FLOAT64

FUNCS = {"exp": (0, np.exp), "log": (1, np.log), "log1p": (2, np.log1p)}
MAX_ULP = FASTMATH_ULPS  # the bound documented in fastmath.h


def isas() -> list[str]:
    return str(_native.core().cpu_isas()).split(",")


@pytest.fixture(params=isas())
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    core = _native.core()
    before = core.cpu_isa()
    core.set_cpu_isa(request.param)
    yield str(request.param)
    core.set_cpu_isa(before)


def evaluate(name: str, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    code = 1 if x.dtype == np.float64 else 0
    _native.core().fastmath_eval(
        FUNCS[name][0],
        code,
        -1,
        0,
        x.size,
        x.__array_interface__["data"][0],
        y.__array_interface__["data"][0],
    )
    return y


def ulp_error(got: np.ndarray, x: np.ndarray, name: str) -> np.ndarray:
    """|got - f(x)| in units of the float32 ulp at f(x) (f in float64)."""
    with np.errstate(all="ignore"):
        ref = FUNCS[name][1](x.astype(np.float64))
        ref32 = ref.astype(np.float32)  # overflows to inf where the float32 result does
    finite = np.isfinite(ref32) & np.isfinite(got)
    exp = np.frexp(np.abs(ref32[finite]).astype(np.float64))[1]
    ulp = np.maximum(np.ldexp(1.0, exp - 24), np.ldexp(1.0, -149))
    err = np.zeros(x.shape)
    err[finite] = np.abs(got[finite].astype(np.float64) - ref[finite]) / ulp
    # Non-finite results must agree exactly (inf with inf of the same sign, NaN with NaN).
    nonfinite = ~finite
    same = (np.isnan(got) & np.isnan(ref32)) | (got == ref32)
    err[nonfinite & ~same] = np.inf
    return err


def all_float32_sample(step: int) -> np.ndarray:
    """Every step-th float32 bit pattern (both signs, every binade, subnormals, inf, NaN)."""
    bits = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    return bits.view(np.float32)


@pytest.mark.parametrize("name", list(FUNCS))
def test_dense_sweep_error_bound(isa: str, name: str) -> None:
    x = all_float32_sample(step=997)  # ~4.3M inputs spread evenly over all bit patterns
    got = evaluate(name, x)
    err = ulp_error(got, x, name)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, f"{name} on {isa}: {err[worst]} ulp at x={x[worst]!r}"


@pytest.mark.parametrize("name", list(FUNCS))
def test_near_critical_ranges(name: str) -> None:
    """Dense grids where the reductions are delicate: around 0, 1, -1, the overflow and
    underflow thresholds."""
    centers = {
        "exp": [0.0, 88.72, -87.3, -103.9],
        "log": [1.0, 2.0, 0.5],
        "log1p": [0.0, -0.5, 1.0],
    }
    for c in centers[name]:
        x = (np.float32(c) + np.linspace(-0.05, 0.05, 200_001)).astype(np.float32)
        err = ulp_error(evaluate(name, x), x, name)
        assert err.max() <= MAX_ULP, f"{name} near {c}: {err.max()} ulp"
    tiny = np.geomspace(1e-45, 1e-3, 100_000).astype(np.float32)
    x = np.concatenate([tiny, -tiny]) if name != "log" else tiny
    err = ulp_error(evaluate(name, x), x, name)
    assert err.max() <= MAX_ULP, f"{name} on tiny inputs: {err.max()} ulp"


def test_special_values() -> None:
    inf, nan = np.float32(np.inf), np.float32(np.nan)
    x = np.array(
        [0.0, -0.0, inf, -inf, nan, 89.0, 88.8, -104.0, -200.0, 1.0, -1.0, -2.0, 1e-45, 3e38],
        dtype=np.float32,
    )
    with np.errstate(all="ignore"):
        for name, (_, f) in FUNCS.items():
            got = evaluate(name, x)
            ref = f(x.astype(np.float64)).astype(np.float32)
            assert np.array_equal(np.isnan(got), np.isnan(ref)), (name, got, ref)
            ok = np.isnan(ref) | (got == ref) | (ulp_error(got, x, name) <= MAX_ULP)
            assert ok.all(), (name, x[~ok], got[~ok], ref[~ok])
            # Signs of zeros and infinities as libm.
            exact = ~np.isnan(ref) & ((ref == 0) | np.isinf(ref))
            assert np.array_equal(np.signbit(got[exact]), np.signbit(ref[exact])), name


@pytest.mark.parametrize("name", list(FUNCS))
def test_float64_is_libm(name: str) -> None:
    x = np.random.default_rng(0).standard_normal(10_000) * 50
    if name != "exp":
        x = np.abs(x)
    # glibc's functions (what fp64 uses) and numpy's may differ in the last bit.
    tol = LIBM_FLOAT64
    np.testing.assert_allclose(evaluate(name, x), FUNCS[name][1](x), rtol=tol.rtol, atol=tol.atol)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(FUNCS))
def test_dense_sweep_error_bound_cuda(name: str) -> None:
    import torch

    x = all_float32_sample(step=997)
    xt = torch.from_numpy(x).cuda()
    yt = torch.empty_like(xt)
    stream = int(torch.cuda.current_stream().cuda_stream)
    _native.core().fastmath_eval(
        FUNCS[name][0], 0, xt.device.index, stream, xt.numel(), xt.data_ptr(), yt.data_ptr()
    )
    err = ulp_error(yt.cpu().numpy(), x, name)
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP, f"{name} on cuda: {err[worst]} ulp at x={x[worst]!r}"
