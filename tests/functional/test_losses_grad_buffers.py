"""The reuse of large CPU gradient buffers between loss calls (functional/_losses_buffers.py):
a buffer comes back only when nothing references it any more, results do not change, the
memory kept is bounded and the cache can be turned off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import gradfuse.nn.functional as gF
from gradfuse.functional import (
    cross_entropy_with_grad,
    grad_buffer_cache_info,
    mse_loss_with_grad,
    set_grad_buffer_cache,
)

N, C = 700, 1000  # 2.8 MB of float32: above the 1 MiB threshold of the cache
NBYTES = N * C * 4


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    before = grad_buffer_cache_info()["max_bytes"]
    set_grad_buffer_cache(0)  # start empty
    set_grad_buffer_cache(1 << 30)
    yield
    set_grad_buffer_cache(0)
    set_grad_buffer_cache(before)


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, generator=g) * 3, torch.randint(0, C, (N,), generator=g)


def test_released_buffer_is_reused_and_results_unchanged() -> None:
    x, t = _inputs(1)
    _, g1 = cross_entropy_with_grad(x, t)
    ptr = g1.data_ptr()
    del g1
    loss, g2 = cross_entropy_with_grad(x, t)
    assert g2.data_ptr() == ptr
    set_grad_buffer_cache(0)
    loss_ref, g_ref = cross_entropy_with_grad(x, t)
    assert g_ref.data_ptr() != ptr or grad_buffer_cache_info()["buffers"] == 0
    assert torch.equal(loss, loss_ref)
    assert torch.equal(g2, g_ref)


@pytest.mark.parametrize("holder", ["tensor", "view", "numpy", "list"])
def test_buffer_still_referenced_is_never_handed_out(holder: str) -> None:
    x, t = _inputs(2)
    _, g1 = cross_entropy_with_grad(x, t)
    expected = g1.clone()
    ptr = g1.data_ptr()
    keep: object
    if holder == "tensor":
        keep = g1
    elif holder == "view":
        keep = g1[3:5]
    elif holder == "numpy":
        keep = g1.numpy()
    else:
        keep = [g1.view(-1)]
    del g1
    x2, t2 = _inputs(3)
    _, g2 = cross_entropy_with_grad(x2, t2)
    assert g2.data_ptr() != ptr
    # The held gradient kept its values.
    if holder == "tensor":
        assert torch.equal(keep, expected)  # type: ignore[arg-type]
    elif holder == "view":
        assert torch.equal(keep, expected[3:5])  # type: ignore[arg-type]
    elif holder == "numpy":
        assert torch.equal(torch.from_numpy(keep), expected)  # type: ignore[arg-type]
    else:
        assert torch.equal(keep[0], expected.view(-1))  # type: ignore[index]
    assert grad_buffer_cache_info()["in_use"] == 2


def test_dot_grad_holds_its_buffer_across_steps() -> None:
    x, t = _inputs(4)
    a = x.clone().requires_grad_(True)
    gF.cross_entropy(a, t).backward()
    first = a.grad.clone()  # type: ignore[union-attr]
    b = (x * 0.5).requires_grad_(True)
    gF.cross_entropy(b, t).backward()
    assert a.grad.data_ptr() != b.grad.data_ptr()  # type: ignore[union-attr]
    assert torch.equal(a.grad, first)  # type: ignore[arg-type]
    ref = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(ref, t).backward()
    torch.testing.assert_close(a.grad, ref.grad)
    # set_to_none releases a's buffer: the next step may take it.
    ptr = a.grad.data_ptr()  # type: ignore[union-attr]
    a.grad = None
    c = x.clone().requires_grad_(True)
    gF.cross_entropy(c, t).backward()
    assert c.grad.data_ptr() == ptr  # type: ignore[union-attr]
    assert torch.equal(c.grad, first)  # type: ignore[arg-type]


def test_elementwise_losses_use_the_cache() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(N * C, generator=g), torch.randn(N * C, generator=g)
    _, g1 = mse_loss_with_grad(x, y)
    ptr = g1.data_ptr()
    del g1
    loss, g2 = mse_loss_with_grad(x, y)
    assert g2.data_ptr() == ptr
    xr = x.clone().requires_grad_(True)
    ref = torch.nn.functional.mse_loss(xr, y)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(g2, xr.grad)


def test_memory_kept_is_bounded() -> None:
    set_grad_buffer_cache(NBYTES + NBYTES // 2)  # room for one buffer
    x, t = _inputs(6)
    _, g1 = cross_entropy_with_grad(x, t)
    _, g2 = cross_entropy_with_grad(x, t)  # g1 in use: a second buffer, not kept
    info = grad_buffer_cache_info()
    assert info == {"max_bytes": NBYTES + NBYTES // 2, "buffers": 1, "bytes": NBYTES, "in_use": 1}
    assert g1.data_ptr() != g2.data_ptr()
    del g1, g2
    assert grad_buffer_cache_info()["in_use"] == 0


def test_small_buffers_and_disabled_cache_bypass_it() -> None:
    x, t = torch.randn(7, 10), torch.randint(0, 10, (7,))
    cross_entropy_with_grad(x, t)
    assert grad_buffer_cache_info()["buffers"] == 0
    set_grad_buffer_cache(0)
    xb, tb = _inputs(7)
    cross_entropy_with_grad(xb, tb)
    assert grad_buffer_cache_info() == {"max_bytes": 0, "buffers": 0, "bytes": 0, "in_use": 0}


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_invalid_limit_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_bytes must be a non-negative int"):
        set_grad_buffer_cache(bad)  # type: ignore[arg-type]
