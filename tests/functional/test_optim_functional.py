"""gradfuse.functional.sgd_: numpy and torch inputs, and bad input refused with nothing written."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import tolerances
from gradfuse.functional import sgd_
from optim_testing import assert_unchanged, snapshot


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_numpy_matches_torch(dtype: str) -> None:
    rng = np.random.default_rng(0)
    shapes = [(7,), (3, 5), (4097,), (0,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    bufs: list[Any] = [None] * len(params)
    t_params = [torch.from_numpy(p.copy()) for p in params]
    t_bufs: list[Any] = [None] * len(params)
    for _ in range(3):
        sgd_(params, grads, bufs, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
        sgd_(
            t_params,
            [torch.from_numpy(g) for g in grads],
            t_bufs,
            lr=0.1,
            momentum=0.9,
            weight_decay=0.01,
            nesterov=True,
        )
    for p, tp, b, tb in zip(params, t_params, bufs, t_bufs, strict=True):
        assert np.array_equal(p, tp.numpy())
        assert np.array_equal(b, tb.numpy())


def test_buffers_are_created_like_torch() -> None:
    p, g = torch.randn(5), torch.randn(5)
    bufs: list[Any] = [None]
    sgd_([p], [g], bufs, lr=0.1, momentum=0.9, maximize=True)
    assert isinstance(bufs[0], torch.Tensor)
    tolerances.assert_close(bufs[0], -g, tolerances.STEP[torch.float32])


def test_momentum_needs_buffer_list() -> None:
    with pytest.raises(ValueError, match="momentum_buffers"):
        sgd_([torch.randn(3)], [torch.randn(3)], None, lr=0.1, momentum=0.9)


# Each case builds (params, grads, bufs) with exactly one thing wrong, and names what the message
# must mention.
def _case(kind: str) -> tuple[list[Any], list[Any], list[Any], str, type[Exception]]:
    good = [torch.randn(6), torch.randn(2, 3)]
    grads = [torch.randn(6), torch.randn(2, 3)]
    bufs: list[Any] = [torch.randn(6), torch.randn(2, 3)]
    if kind == "shape":
        grads[1] = torch.randn(3, 2)
        return good, grads, bufs, r"grads\[1\] has shape \(3, 2\)", ValueError
    if kind == "dtype":
        grads[0] = torch.randn(6, dtype=torch.float64)
        return good, grads, bufs, r"grads\[0\] has dtype float64", TypeError
    if kind == "int":
        good[1] = torch.ones(2, 3, dtype=torch.int32)
        return good, grads, bufs, r"params\[1\]: dtype torch.int32 is not supported", TypeError
    if kind == "bool":
        grads[0] = torch.ones(6, dtype=torch.bool)
        return good, grads, bufs, r"grads\[0\]: dtype torch.bool", TypeError
    if kind == "complex":
        good[0] = torch.randn(6, dtype=torch.complex64)
        return good, grads, bufs, r"params\[0\]: dtype torch.complex64", TypeError
    if kind == "length":
        return good, grads[:1], bufs, "1 grads for 2 params", ValueError
    if kind == "alias":
        return (
            [good[0], good[0]],
            [grads[0], grads[0]],
            [bufs[0], torch.randn(6)],
            "share memory",
            ValueError,
        )
    if kind == "buffer_is_param":
        return good, grads, [good[0], bufs[1]], "share memory", ValueError
    if kind == "strided":
        good[0] = torch.randn(12)[::2]
        return good, grads, bufs, r"params\[0\]: expected a dense tensor", ValueError
    if kind == "sparse":
        grads[0] = torch.randn(6).to_sparse()
        return (
            good,
            grads,
            bufs,
            r"grads\[0\]: torch.sparse_coo tensors are not supported",
            TypeError,
        )
    if kind == "not_a_tensor":
        grads[1] = [1.0, 2.0]
        return good, grads, bufs, r"grads\[1\]: expected a torch.Tensor or numpy.ndarray", TypeError
    if kind == "mixed_kinds":
        grads[0] = grads[0].numpy()
        return good, grads, bufs, "is a numpy.ndarray but", TypeError
    raise AssertionError(kind)


KINDS = [
    "shape",
    "dtype",
    "int",
    "bool",
    "complex",
    "length",
    "alias",
    "buffer_is_param",
    "strided",
    "sparse",
    "not_a_tensor",
    "mixed_kinds",
]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_refused_and_nothing_changes(kind: str) -> None:
    params, grads, bufs, match, exc = _case(kind)
    everything = [*params, *grads, *bufs]
    before = snapshot(
        [
            x if isinstance(x, torch.Tensor) and x.layout == torch.strided else None
            for x in everything
        ]
    )
    with pytest.raises(exc, match=match):
        sgd_(params, grads, bufs, lr=0.1, momentum=0.9, weight_decay=0.1)
    after = [
        x if isinstance(x, torch.Tensor) and x.layout == torch.strided else None for x in everything
    ]
    assert_unchanged(before, after)


def test_read_only_numpy_is_refused() -> None:
    p = np.ones(5, np.float32)
    p.setflags(write=False)
    with pytest.raises(ValueError, match=r"params\[0\]: the array is read-only"):
        sgd_([p], [np.ones(5, np.float32)], lr=0.1)


def test_read_only_numpy_gradient_is_fine() -> None:
    p, g = np.ones(5, np.float32), np.ones(5, np.float32)
    g.setflags(write=False)
    sgd_([p], [g], lr=0.5)
    assert np.array_equal(p, np.full(5, 0.5, np.float32))


def test_non_contiguous_numpy_is_refused() -> None:
    p = np.ones((4, 6), np.float32)[:, ::2]
    with pytest.raises(ValueError, match=r"params\[0\]: expected a dense array"):
        sgd_([p], [np.ones((4, 3), np.float32)], lr=0.1)


def test_grad_scaling_unscale_clip_and_skip() -> None:
    p, g = torch.ones(9), torch.full((9,), 8.0)
    sgd_([p], [g], lr=0.5, grad_scale=torch.tensor([4.0]), clip_coef=torch.tensor([0.25]))
    torch.testing.assert_close(p, torch.full((9,), 0.75))  # 1 - 0.5 * (8 / 4 * 0.25)
    sgd_([p], [g], lr=0.5, found_inf=torch.tensor([1.0]))
    torch.testing.assert_close(p, torch.full((9,), 0.75))  # skipped: nothing written
    with pytest.raises(TypeError, match="grad_scale must be a 1-element float32 tensor"):
        sgd_([p], [g], lr=0.5, grad_scale=torch.tensor([4.0], dtype=torch.float64))


@pytest.mark.cuda
def test_cuda_matches_cpu() -> None:
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        params = [torch.randn(n, dtype=dtype) for n in (1, 7, 4097, 0, 70000)]
        grads = [torch.randn(n, dtype=dtype) for n in (1, 7, 4097, 0, 70000)]
        cpu_p = [p.clone() for p in params]
        gpu_p = [p.cuda() for p in params]
        cpu_b: list[Any] = [None] * len(params)
        gpu_b: list[Any] = [None] * len(params)
        for _ in range(3):
            sgd_(cpu_p, grads, cpu_b, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
            sgd_(
                gpu_p,
                [g.cuda() for g in grads],
                gpu_b,
                lr=0.1,
                momentum=0.9,
                weight_decay=0.01,
                nesterov=True,
            )
        for a, b in zip(cpu_p, gpu_p, strict=True):
            tolerances.assert_close(b.cpu(), a, tolerances.CPU_VS_CUDA[dtype], msg=str(dtype))


@pytest.mark.cuda
def test_cuda_amp_found_inf_on_device() -> None:
    p = torch.ones(100, device="cuda")
    g = torch.full((100,), 8.0, device="cuda")
    sgd_(
        [p],
        [g],
        lr=0.5,
        grad_scale=torch.tensor([4.0], device="cuda"),
        found_inf=torch.tensor([0.0], device="cuda"),
    )
    torch.testing.assert_close(p, torch.zeros(100, device="cuda"))
    sgd_([p], [g], lr=0.5, found_inf=torch.tensor([1.0], device="cuda"))
    torch.testing.assert_close(p, torch.zeros(100, device="cuda"))
