"""gradfuse.clip_grad_norm_ and gradfuse.grad_norms against torch.nn.utils.clip_grad_norm_ and
torch.linalg.vector_norm; determinism of the native norm across thread counts."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

import gradfuse
from conftest import DTYPES
from tolerances import (
    CLIPPED_FLOAT64,
    LOW_PRECISION_DTYPES,
    NORM,
    assert_close,
    assert_low_precision,
)

NORM_TYPES = [2.0, 1.0, math.inf, -math.inf, 0.0, 3.0, 0.5, -1.0]
# Orders whose reduction has no identity: torch refuses empty tensors for them.
NO_IDENTITY = {math.inf, -math.inf, -1.0}


def params_with_grads(
    sizes: tuple[int, ...], dtype: torch.dtype, scale: float = 1.0
) -> list[torch.Tensor]:
    params = []
    for n in sizes:
        p = torch.randn(n, dtype=dtype, requires_grad=True)
        p.grad = (torch.randn(n, dtype=torch.float64) * scale).to(dtype)
        params.append(p)
    return params


def clones(params: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for p in params:
        q = p.detach().clone().requires_grad_()
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out


def sizes_for(norm_type: float) -> tuple[int, ...]:
    return (1, 7, 4097) if norm_type in NO_IDENTITY else (1, 7, 4097, 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_clip_grad_norm_matches_torch(dtype: torch.dtype, norm_type: float) -> None:
    ours = params_with_grads(sizes_for(norm_type), dtype, scale=3.0)
    theirs = clones(ours)
    exact = [p.grad.to(torch.float64, copy=True) for p in ours]  # type: ignore[union-attr]
    max_norm = 0.7
    total = gradfuse.clip_grad_norm_(ours, max_norm, norm_type)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    ref_total = torch.nn.utils.get_total_norm(exact, norm_type)
    assert total.dtype == their_total.dtype
    assert total.device == their_total.device
    # The total comes back in the gradients' dtype (inf where it overflows it, as torch's).
    assert_close(total.double(), ref_total.to(dtype).double(), NORM[dtype], f"total {norm_type}")
    coef = min(max_norm / (ref_total.item() + 1e-6), 1.0)
    for i, (p, q, g) in enumerate(zip(ours, theirs, exact, strict=True)):
        msg = f"clipped grad {i}, ord {norm_type}"
        if dtype in LOW_PRECISION_DTYPES:
            assert_low_precision(p.grad, q.grad, g * coef, msg)  # type: ignore[arg-type]
        else:
            tol = CLIPPED_FLOAT64 if dtype == torch.float64 else NORM[dtype]
            assert_close(p.grad.double(), g * coef, tol, msg)  # type: ignore[union-attr]


def test_no_clip_leaves_grads_bitwise() -> None:
    ours = params_with_grads((7, 4097), torch.float32)
    before = [p.grad.clone() for p in ours]  # type: ignore[union-attr]
    gradfuse.clip_grad_norm_(ours, 1e6)
    for p, b in zip(ours, before, strict=True):
        assert torch.equal(p.grad, b)  # type: ignore[arg-type]


def test_edge_cases_match_torch() -> None:
    assert torch.equal(gradfuse.clip_grad_norm_([], 1.0), torch.nn.utils.clip_grad_norm_([], 1.0))
    no_grad = torch.zeros(3, requires_grad=True)
    assert float(gradfuse.clip_grad_norm_([no_grad], 1.0)) == 0.0

    def empty() -> Iterator[torch.Tensor]:
        yield from ()

    with pytest.warns(UserWarning, match="empty generator"):
        gradfuse.clip_grad_norm_(empty(), 1.0)
    # A single tensor is accepted.
    p = params_with_grads((5,), torch.float64)[0]
    q = clones([p])[0]
    assert_close(
        gradfuse.clip_grad_norm_(p, 0.1),
        torch.nn.utils.clip_grad_norm_(q, 0.1),
        NORM[torch.float64],
        "single tensor",
    )
    # Empty gradients under orders without an identity: both refuse.
    e = params_with_grads((0, 3), torch.float32)
    for norm_type in NO_IDENTITY:
        with pytest.raises(RuntimeError, match="empty"):
            gradfuse.clip_grad_norm_(e, 1.0, norm_type)
        with pytest.raises(RuntimeError, match="empty"):
            torch.nn.utils.clip_grad_norm_(clones(e), 1.0, norm_type)


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_nonfinite(bad: float) -> None:
    ours = params_with_grads((7, 4097), torch.float32)
    ours[1].grad[5] = bad  # type: ignore[index]
    theirs = clones(ours)
    with pytest.raises(RuntimeError) as ours_err:
        gradfuse.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as their_err:
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    assert str(ours_err.value) == str(their_err.value)
    for p, q in zip(ours, theirs, strict=True):  # nothing written on error
        assert torch.equal(p.grad.isnan(), q.grad.isnan())  # type: ignore[union-attr]
    total = gradfuse.clip_grad_norm_(ours, 1.0)
    their_total = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert torch.equal(total.isnan(), their_total.isnan())
    assert torch.equal(total.isinf(), their_total.isinf())
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.grad, q.grad, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_grad_norms_match_vector_norm(dtype: torch.dtype) -> None:
    for norm_type in NORM_TYPES:
        params = params_with_grads(sizes_for(norm_type), dtype)
        norms = gradfuse.grad_norms(params, norm_type)
        assert norms.dtype == dtype
        assert norms.shape == (len(params),)
        for i, p in enumerate(params):
            ref = torch.linalg.vector_norm(p.grad.double(), norm_type)  # type: ignore[union-attr]
            # Rounded to the gradients' dtype, as returned (inf where it overflows, as torch's).
            ref = ref.to(dtype).double()
            assert_close(norms[i].double(), ref, NORM[dtype], f"grad {i}, ord {norm_type}")


def test_grad_norms_mixed_dtypes_and_skipped_params() -> None:
    a = params_with_grads((9,), torch.float16)[0]
    b = torch.zeros(4, requires_grad=True)  # no grad: skipped
    c = params_with_grads((4097,), torch.float64)[0]
    d = params_with_grads((3,), torch.float32)[0]
    norms = gradfuse.grad_norms([a, b, c, d])
    assert norms.dtype == torch.float64
    expected = torch.stack(
        [torch.linalg.vector_norm(p.grad.double()) for p in (a, c, d)]  # type: ignore[union-attr]
    )
    assert_close(norms, expected, NORM[torch.float16], "mixed dtypes")
    assert gradfuse.grad_norms([b]).numel() == 0
    # Total over several dtypes: torch's norm of the per-group norms.
    theirs = clones([a, c, d])
    total = gradfuse.clip_grad_norm_([a, c, d], 1e9)
    assert_close(total, torch.nn.utils.clip_grad_norm_(theirs, 1e9), NORM[torch.float16], "total")


def test_norm_is_bitwise_deterministic_across_threads() -> None:
    params = params_with_grads((1_000_003, 70_001, 5, 0, 262_144), torch.float32)
    threads = gradfuse.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3):
            gradfuse.set_num_threads(n)
            for norm_type in (2.0, 1.0, 3.0):
                first = gradfuse.grad_norms(params, norm_type)
                again = gradfuse.grad_norms(params, norm_type)
                assert torch.equal(first, again)
                results.setdefault(norm_type, []).append(first)
    finally:
        gradfuse.set_num_threads(threads)
    for runs in results.values():
        for r in runs[1:]:
            assert torch.equal(r, runs[0])
