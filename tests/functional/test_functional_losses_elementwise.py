"""gradfuse.functional.<loss>_with_grad: numpy path == torch path, against torch, and out=."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import gradfuse.functional as gf
from tolerances import LOSS, assert_close

LOSSES: list[tuple[str, dict[str, Any]]] = [
    ("mse_loss", {}),
    ("l1_loss", {}),
    ("smooth_l1_loss", {"beta": 0.5}),
    ("huber_loss", {"delta": 0.8}),
    ("binary_cross_entropy_with_logits", {}),
    ("kl_div", {"log_target": True}),
    ("kl_div", {"log_target": False}),
]


def inputs(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    x = torch.randn(shape, dtype=dtype)
    if name == "binary_cross_entropy_with_logits":
        y = torch.rand(shape, dtype=dtype)
    elif name == "kl_div":
        y = torch.rand(shape, dtype=dtype) + 0.1
    else:
        y = torch.randn(shape, dtype=dtype)
    return x, y


def torch_reference(
    name: str, x: torch.Tensor, y: torch.Tensor, reduction: str, kw: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    xi = x.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
        loss = getattr(TF, name)(xi, y, reduction=reduction, **kw)
    loss.sum().backward()
    assert xi.grad is not None
    return loss.detach(), xi.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("name", "kw"), LOSSES, ids=str)
def test_numpy_equals_torch_and_matches_torch(
    name: str, kw: dict[str, Any], reduction: str, dtype: torch.dtype
) -> None:
    x, y = inputs(name, (37, 11), dtype)
    fn = getattr(gf, f"{name}_with_grad")
    loss_t, grad_t = fn(x, y, reduction=reduction, **kw)
    loss_n, grad_n = fn(x.numpy(), y.numpy(), reduction=reduction, **kw)
    assert isinstance(loss_n, np.ndarray)
    assert isinstance(grad_n, np.ndarray)
    assert isinstance(loss_t, torch.Tensor)
    assert isinstance(grad_t, torch.Tensor)
    assert np.array_equal(loss_n, loss_t.numpy())
    assert np.array_equal(grad_n, grad_t.numpy())
    ref_loss, ref_grad = torch_reference(name, x, y, reduction, kw)
    assert_close(loss_t, ref_loss, LOSS[dtype], f"{name} {reduction} loss")
    assert_close(grad_t, ref_grad, LOSS[dtype], f"{name} {reduction} grad")


def test_numpy_broadcast_and_weights() -> None:
    x, y = torch.randn(4, 1, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    w = torch.rand(3, dtype=torch.float64)
    pw = torch.rand(3, dtype=torch.float64) + 0.5
    loss_n, grad_n = gf.mse_loss_with_grad(x.numpy(), y.numpy(), reduction="sum")
    ref_loss, ref_grad = torch_reference(
        "mse_loss", x.expand(4, 5, 3), y.expand(4, 5, 3), "sum", {}
    )
    ref_grad = ref_grad.sum(1, keepdim=True)
    assert grad_n.shape == (4, 1, 3)
    assert_close(torch.from_numpy(loss_n), ref_loss, LOSS[torch.float64])
    assert_close(torch.from_numpy(grad_n), ref_grad, LOSS[torch.float64])
    t = torch.rand(4, 5, 3, dtype=torch.float64)
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    loss_n, grad_n = gf.binary_cross_entropy_with_logits_with_grad(
        z.numpy(), t.numpy(), weight=w.numpy(), pos_weight=pw.numpy()
    )
    ref_loss, ref_grad = torch_reference(
        "binary_cross_entropy_with_logits", z, t, "mean", {"weight": w, "pos_weight": pw}
    )
    assert_close(torch.from_numpy(loss_n), ref_loss, LOSS[torch.float64])
    assert_close(torch.from_numpy(grad_n), ref_grad, LOSS[torch.float64])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_and_inplace(kind: str) -> None:
    x, y = inputs("binary_cross_entropy_with_logits", (1000,), torch.float32)
    xa: Any = x.numpy() if kind == "numpy" else x
    ya: Any = y.numpy() if kind == "numpy" else y
    x0 = xa.copy() if kind == "numpy" else xa.clone()
    loss, grad = gf.binary_cross_entropy_with_logits_with_grad(xa, ya)
    assert (xa == x0).all(), "the input must never be overwritten by default"
    out = np.empty_like(xa) if kind == "numpy" else torch.empty_like(xa)
    loss2, grad2 = gf.binary_cross_entropy_with_logits_with_grad(xa, ya, out=out)
    assert grad2 is out
    assert (out == grad).all()
    assert loss2 == loss
    loss3, grad3 = gf.binary_cross_entropy_with_logits_with_grad(xa, ya, out=xa)
    assert grad3 is xa
    assert (xa == grad).all()
    assert loss3 == loss


def test_errors_leave_out_untouched() -> None:
    x, y = torch.randn(10), torch.randn(10)
    out = torch.full((10,), 7.0)
    with pytest.raises(ValueError, match="out has shape"):
        gf.mse_loss_with_grad(x, y, out=torch.empty(3))
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        gf.mse_loss_with_grad(x, y, reduction="avg", out=out)
    with pytest.raises(TypeError, match="both be torch tensors or both numpy"):
        gf.mse_loss_with_grad(x, y.numpy(), out=out)
    with pytest.raises(ValueError, match="share memory"):
        gf.mse_loss_with_grad(x, out, out=out)
    assert (out == 7.0).all()
    with pytest.raises(RuntimeError, match="non-positive values for delta"):
        gf.huber_loss_with_grad(x, y, delta=-1.0)


def test_native_refuses_options_a_loss_lacks() -> None:
    """The kernel has no weighted smooth_l1 / kl_div and pos_weight is BCE's only: the binding
    refuses such calls instead of silently computing something else."""
    from gradfuse import _native

    a = [np.random.default_rng(0).random(8, dtype=np.float32) + 0.1 for _ in range(4)]
    grad, loss = np.empty(8, np.float32), np.full((), 7.0, np.float32)
    ptr = [x.__array_interface__["data"][0] for x in (*a, grad, loss)]
    for kind, weight, pos_weight, match in (
        (5, ptr[2], 0, "weight is not an option"),
        (2, ptr[2], 0, "weight is not an option"),
        (0, 0, ptr[3], "pos_weight is only for"),
    ):
        with pytest.raises(ValueError, match=match):
            _native.core().elementwise_loss(
                kind,
                0,
                -1,
                0,
                8,
                input=ptr[0],
                target=ptr[1],
                weight=weight,
                pos_weight=pos_weight,
                grad=ptr[4],
                loss=ptr[5],
                reduction=1,
                divisor=1.0,
                param=1.0,
                log_target=False,
            )
    assert loss == 7.0


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_out_of_another_dtype_or_layout_is_refused(kind: str) -> None:
    """out= receives the input's gradient: another float dtype or a non-contiguous array is
    refused before anything is written, as cross_entropy_with_grad refuses them (it was cast or
    re-laid into silently)."""
    x, y = torch.randn(4, 5), torch.randn(4, 5)
    xa: Any = x.numpy() if kind == "numpy" else x
    ya: Any = y.numpy() if kind == "numpy" else y
    to_kind: Any = (lambda t: t.numpy()) if kind == "numpy" else (lambda t: t)
    for dtype in (torch.float64, torch.float16):
        out = to_kind(torch.full((4, 5), 7.0, dtype=dtype))
        with pytest.raises(TypeError, match=r"out has dtype .* but input has dtype float32"):
            gf.mse_loss_with_grad(xa, ya, out=out)
        assert (out == 7.0).all()
    strided = to_kind(torch.full((5, 4), 7.0).t())
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        gf.huber_loss_with_grad(xa, ya, out=strided)
    assert (strided == 7.0).all()
    # A broadcast target: the gradient is summed into a valid out=.
    xb: Any = to_kind(torch.randn(1, 5))
    out = to_kind(torch.full((1, 5), 7.0))
    _, grad = gf.mse_loss_with_grad(xb, ya, out=out)
    assert grad is out
    _, ref_grad = torch_reference("mse_loss", torch.as_tensor(xb).expand(4, 5), y, "mean", {})
    assert_close(torch.as_tensor(out), ref_grad.sum(0, keepdim=True), LOSS[torch.float32])


def test_result_dtype_is_torchs() -> None:
    """Operands of different dtypes: the loss in torch's result dtype (huber: the input's; BCE
    with logits: the target's; mse / l1 with a weight: promoted with the weight's), computed in
    the promoted dtype; the gradient in the input's dtype."""
    x = torch.randn(3, 4)
    y = torch.randn(3, 4, dtype=torch.float64)
    w = torch.rand(3, 4, dtype=torch.float64)
    for name, args, kw in (
        ("huber_loss", (x, y), {}),
        ("huber_loss", (x.half(), y.float()), {}),
        ("binary_cross_entropy_with_logits", (x.double(), y.sigmoid().float()), {}),
        ("mse_loss", (x, y.float()), {"weight": w}),
        ("l1_loss", (x, y.float()), {"weight": w}),
        ("kl_div", (x.log_softmax(-1), y.softmax(-1)), {"reduction": "sum"}),
    ):
        loss, grad = getattr(gf, f"{name}_with_grad")(*args, **kw)
        theirs = getattr(TF, name)(*args, **kw)
        assert loss.dtype == theirs.dtype, name
        assert grad.dtype == args[0].dtype, name
    loss_n, grad_n = gf.huber_loss_with_grad(x.numpy(), y.numpy())
    assert loss_n.dtype == np.float32
    assert grad_n.dtype == np.float32
