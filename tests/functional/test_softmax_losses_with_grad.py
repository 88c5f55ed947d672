"""gradfuse.functional.cross_entropy_with_grad / nll_loss_with_grad: numpy and torch paths,
out= buffers, loss-only calls and bitwise determinism across thread counts and runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradfuse
import tolerances
from gradfuse.functional import cross_entropy_with_grad, nll_loss_with_grad


def _torch_reference(
    x: torch.Tensor, t: torch.Tensor, **kw: object
) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    loss = F.cross_entropy(xr, t, **kw)  # type: ignore[arg-type]
    loss.sum().backward()
    return loss.detach(), xr.grad  # type: ignore[return-value]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("prob", [False, True])
def test_numpy_equals_torch_path(dtype: str, prob: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 13, 2)).astype(dtype)
    if prob:
        t = rng.random((9, 13, 2)).astype(dtype)
        w = None
        kw: dict[str, object] = {"label_smoothing": 0.1}
    else:
        t = rng.integers(0, 13, (9, 2))
        t[0, 0] = -100
        w = rng.random(13).astype(dtype)
        kw = {"label_smoothing": 0.1, "ignore_index": -100}
    for reduction in ("none", "mean", "sum"):
        loss_np, grad_np = cross_entropy_with_grad(x, t, w, reduction=reduction, **kw)  # type: ignore[arg-type]
        loss_t, grad_t = cross_entropy_with_grad(
            torch.from_numpy(x),
            torch.from_numpy(t),
            None if w is None else torch.from_numpy(w),
            reduction=reduction,
            **kw,  # type: ignore[arg-type]
        )
        assert isinstance(loss_np, np.ndarray)
        assert isinstance(grad_np, np.ndarray)
        assert loss_np.shape == tuple(loss_t.shape)
        assert grad_np.dtype == x.dtype
        np.testing.assert_array_equal(loss_np, loss_t.numpy())
        np.testing.assert_array_equal(grad_np, grad_t.numpy())
        ref_loss, ref_grad = _torch_reference(
            torch.from_numpy(x),
            torch.from_numpy(t),
            weight=None if w is None else torch.from_numpy(w),
            reduction=reduction,
            **kw,
        )
        tol = tolerances.LOSS[getattr(torch, dtype)]
        tolerances.assert_close(torch.from_numpy(loss_np), ref_loss, tol, "loss")
        tolerances.assert_close(torch.from_numpy(grad_np), ref_grad, tol, "grad")
    loss_np, grad_np = nll_loss_with_grad(np.log(np.abs(x) + 0.1), rng.integers(0, 13, (9, 2)))
    assert loss_np.shape == ()
    assert grad_np.shape == x.shape


def test_out_buffer_and_in_place() -> None:
    x = torch.randn(6, 33)
    t = torch.randint(0, 33, (6,))
    loss, grad = cross_entropy_with_grad(x, t, label_smoothing=0.2)
    out = torch.full_like(x, float("nan"))
    loss2, grad2 = cross_entropy_with_grad(x, t, label_smoothing=0.2, out=out)
    assert grad2 is out
    assert torch.equal(out, grad)
    assert torch.equal(loss2, loss)
    # Writing over the logits happens only when asked, and gives the same numbers.
    xi = x.clone()
    loss3, grad3 = cross_entropy_with_grad(xi, t, label_smoothing=0.2, out=xi)
    assert grad3 is xi
    assert torch.equal(xi, grad)
    assert torch.equal(loss3, loss)
    xk = torch.randn(3, 5, 4)
    tk = torch.randint(0, 5, (3, 4))
    _, gk = cross_entropy_with_grad(xk, tk, label_smoothing=0.2)
    lk = nll_loss_with_grad(xk, tk)
    xki = xk.clone()
    cross_entropy_with_grad(xki, tk, label_smoothing=0.2, out=xki)
    assert torch.equal(xki, gk)
    xki = xk.clone()
    lk2 = nll_loss_with_grad(xki, tk, out=xki)
    assert torch.equal(xki, lk[1])
    assert torch.equal(lk2[0], lk[0])


def test_out_buffer_is_checked() -> None:
    x = torch.randn(4, 5)
    t = torch.randint(0, 5, (4,))
    with pytest.raises(ValueError, match="shape"):
        cross_entropy_with_grad(x, t, out=torch.empty(4, 6))
    with pytest.raises(TypeError, match="dtype"):
        cross_entropy_with_grad(x, t, out=torch.empty(4, 5, dtype=torch.float64))
    big = torch.randn(40)
    with pytest.raises(ValueError, match="share memory"):
        cross_entropy_with_grad(big[:20].view(4, 5), t, out=big[10:30].view(4, 5))


def test_loss_only() -> None:
    x = torch.randn(5, 9)
    t = torch.randint(0, 9, (5,))
    loss, grad = cross_entropy_with_grad(x, t, compute_grad=False)
    assert grad is None
    tolerances.assert_close(loss, F.cross_entropy(x, t), tolerances.LOSS[torch.float32], "loss")


# Rows of fewer than 16 classes run as tiles of 64 rows, transposed (ce_short_rows in
# src/cpu/kernels/losses_softmax.cpp). Sizes around the tile; their values against torch are in
# tests/nn/test_cross_entropy.py (shapes C7, C10x130).
SHORT_ROWS = [(1, 1), (63, 7), (64, 10), (65, 15), (200, 10)]


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (a NaN equals the same NaN)."""
    return a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_short_rows_equal_the_strided_layout(
    dtype: torch.dtype, prob: bool, weighted: bool
) -> None:
    """Short rows, transposed into tiles, give bit for bit what the same values laid out as
    (1, C, N) give (the K-dimensional path, reading the classes strided), in place too."""
    for n, c in SHORT_ROWS:
        x = (torch.randn(n, c, dtype=torch.float64) * 3).to(dtype)
        if prob:
            t = torch.softmax(torch.randn(n, c, dtype=torch.float64), 1).to(dtype)
            t_k = t.t().unsqueeze(0).contiguous()
        else:
            t = torch.randint(0, c, (n,))
            t[::5] = -100
            t_k = t.unsqueeze(0)
        w = torch.rand(c, dtype=torch.float64).add(0.5).to(dtype) if weighted else None
        x_k = x.t().unsqueeze(0).contiguous()
        for reduction in ("none", "mean", "sum"):
            kw = {"reduction": reduction, "label_smoothing": 0.1}
            loss, grad = cross_entropy_with_grad(x, t, w, **kw)  # type: ignore[arg-type]
            loss_k, grad_k = cross_entropy_with_grad(x_k, t_k, w, **kw)  # type: ignore[arg-type]
            assert _same_bits(grad, grad_k[0].t()), (n, c, reduction)
            assert _same_bits(loss, loss_k[0] if reduction == "none" else loss_k), (n, c)
            xi = x.clone()
            loss_i, grad_i = cross_entropy_with_grad(xi, t, w, out=xi, **kw)  # type: ignore[arg-type]
            assert grad_i is xi
            assert _same_bits(xi, grad), (n, c, reduction)
            assert _same_bits(loss_i, loss), (n, c, reduction)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_across_threads_and_runs(dtype: torch.dtype) -> None:
    cases = [
        (torch.randn(300, 4097).to(dtype), torch.randint(0, 4097, (300,)), {}),
        (torch.randn(8, 40, 129).to(dtype), torch.randint(0, 40, (8, 129)), {}),
        (torch.randn(300, 1000).to(dtype), torch.rand(300, 1000).to(dtype), {}),
        (torch.randn(3000, 10).to(dtype), torch.randint(0, 10, (3000,)), {}),
    ]
    saved = gradfuse.get_num_threads()
    try:
        for x, t, kw in cases:
            results = []
            for threads in (1, 2, 2, 1):
                gradfuse.set_num_threads(threads)
                for red in ("mean", "sum"):
                    results.append(
                        (
                            red,
                            *cross_entropy_with_grad(
                                x, t, reduction=red, label_smoothing=0.1, **kw
                            ),
                        )
                    )
            for red, loss, grad in results:
                _, loss0, grad0 = next(r for r in results if r[0] == red)
                assert torch.equal(loss, loss0), (red, loss, loss0)
                assert torch.equal(grad, grad0), red
    finally:
        gradfuse.set_num_threads(saved)


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512"])
def test_every_isa_path(isa: str) -> None:
    core = gradfuse._native.core()
    if isa not in core.cpu_isas().split(","):
        pytest.skip(f"{isa} not available on this CPU or not compiled")
    saved = core.cpu_isa()
    x = torch.randn(7, 515)
    t = torch.randint(0, 515, (7,))
    try:
        core.set_cpu_isa(isa)
        loss, grad = cross_entropy_with_grad(x, t, label_smoothing=0.05)
    finally:
        core.set_cpu_isa(saved)
    ref_loss, ref_grad = _torch_reference(x, t, label_smoothing=0.05)
    tolerances.assert_close(loss, ref_loss, tolerances.LOSS[torch.float32], isa)
    tolerances.assert_close(grad, ref_grad, tolerances.LOSS[torch.float32], isa)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("prob", [False, True])
def test_cuda_matches_cpu(dtype: torch.dtype, prob: bool) -> None:
    x = torch.randn(37, 3001, dtype=torch.float64).to(dtype)
    t = torch.rand(37, 3001).to(dtype) if prob else torch.randint(0, 3001, (37,))
    w = torch.rand(3001).to(dtype)
    for red in ("none", "mean", "sum"):
        cpu = cross_entropy_with_grad(x, t, w, reduction=red, label_smoothing=0.1)
        gpu = cross_entropy_with_grad(
            x.cuda(), t.cuda(), w.cuda(), reduction=red, label_smoothing=0.1
        )
        for a, b in zip(cpu, gpu, strict=True):
            tolerances.assert_close(b.cpu(), a, tolerances.CPU_VS_CUDA[dtype], f"cuda {red}")
    if not prob:
        bad = t.clone()
        bad[3] = 3001
        with pytest.raises(IndexError, match=r"Target 3001 is out of bounds\."):
            cross_entropy_with_grad(x.cuda(), bad.cuda())
        cpu = nll_loss_with_grad(x, t, w)
        gpu = nll_loss_with_grad(x.cuda(), t.cuda(), w.cuda())
        for a, b in zip(cpu, gpu, strict=True):
            tolerances.assert_close(b.cpu(), a, tolerances.CPU_VS_CUDA[dtype], "cuda nll")


def test_arguments_that_are_not_arrays_are_named() -> None:
    """A list where an array is expected: a TypeError naming the argument (it was an
    AttributeError about 'shape')."""
    x = torch.randn(4, 5)
    t = torch.tensor([0, 1, 2, 3])
    for fn in (cross_entropy_with_grad, nll_loss_with_grad):
        for xa, ta in ((x, t), (x.numpy(), t.numpy())):
            for args, name in (
                ((xa, [0, 1, 2, 3]), "target"),
                (([[0.0] * 5] * 4, ta), "input"),
                ((xa, ta, [1.0] * 5), "weight"),
            ):
                with pytest.raises(TypeError, match=f"{name} must be a torch.Tensor or numpy"):
                    fn(*args)


def test_probability_target_weight_of_another_dtype() -> None:
    """Probability targets: torch promotes the weight with the input (float64, even int64);
    cross_entropy_with_grad takes it, cast to the input's dtype (it refused it)."""
    x = torch.randn(6, 5)
    p = torch.softmax(torch.randn(6, 5), dim=1)
    w = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0])
    same = cross_entropy_with_grad(x, p, w, label_smoothing=0.1)
    for other in (w.double(), w.long(), w.half()):
        loss, grad = cross_entropy_with_grad(x, p, other, label_smoothing=0.1)
        assert loss.dtype == torch.float32
        assert torch.equal(loss, same[0])
        assert torch.equal(grad, same[1])
    ref = F.cross_entropy(x, p, w.double(), label_smoothing=0.1)
    tolerances.assert_close(same[0].double(), ref, tolerances.LOSS[torch.float32], "vs torch")
    # Class-index targets: torch's nll kernel asks for the input's dtype, and so does gradfuse.
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
        cross_entropy_with_grad(x, torch.tensor([0, 1, 2, 3, 4, 0]), w.double())


def test_uint8_targets_where_torch_takes_them() -> None:
    """uint8 class targets: taken for 1-D / 2-D inputs, refused with torch's error for inputs of
    3 or more dims and for the label-smoothed weighted 'mean' (torch's gather of the weights)."""
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    t = np.random.default_rng(1).integers(0, 5, (4, 3)).astype(np.uint8)
    with pytest.raises(RuntimeError, match="expected scalar type Long but found Byte"):
        cross_entropy_with_grad(x, t)
    with pytest.raises(RuntimeError, match="expected scalar type Long but found Byte"):
        nll_loss_with_grad(torch.from_numpy(x), torch.from_numpy(t))
    x2, t2 = x[:, :, 0].copy(), t[:, 0].copy()
    w = np.ones(5, np.float32)
    loss, _ = cross_entropy_with_grad(x2, t2, w, label_smoothing=0.1, reduction="sum")
    ref = F.cross_entropy(
        torch.from_numpy(x2), torch.from_numpy(t2).long(), label_smoothing=0.1, reduction="sum"
    )
    tolerances.assert_close(torch.from_numpy(loss), ref, tolerances.LOSS[torch.float32], "u8")
    with pytest.raises(RuntimeError, match=r"gather\(\): Expected dtype int32/int64 for index"):
        cross_entropy_with_grad(x2, t2, w, label_smoothing=0.1)
