"""Adagrad / RMSprop / Lion / norms on CUDA against the same inputs on the CPU (one shared rule,
DESIGN.md rule 2). Skipped with a reason where no GPU is visible."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import gradfuse
from conftest import DTYPES
from gradfuse import functional as F
from gradfuse.optim import Adagrad, Lion, RMSprop
from tolerances import CPU_VS_CUDA, NORM, assert_close

pytestmark = pytest.mark.cuda

SIZES = (1, 7, 4097, 0, 70_001)


def _both(dtype: torch.dtype, n_state: int) -> tuple[list[list[torch.Tensor]], ...]:
    """The same params, grads and state lists on cpu and cuda."""
    lists = [[torch.randn(n, dtype=torch.float64).to(dtype) for n in SIZES] for _ in range(2)]
    # State: the first list in [1, 2) (Adagrad's sum, RMSprop's square_avg), the others in
    # [0, 0.5), so RMSprop's square_avg - grad_avg^2 stays positive (no NaN to compare).
    for k in range(n_state):
        lists.append(
            [
                torch.rand(n, dtype=torch.float64)
                .mul(1.0 if k == 0 else 0.5)
                .add(1.0 if k == 0 else 0.0)
                .to(dtype)
                for n in SIZES
            ]
        )
    cpu = [[x.clone() for x in xs] for xs in lists]
    cuda = [[x.cuda() for x in xs] for xs in lists]
    return cpu, cuda


def _compare(cpu: list[list[torch.Tensor]], cuda: list[list[torch.Tensor]], msg: str) -> None:
    for d, (xs, ys) in enumerate(zip(cpu, cuda, strict=True)):
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            assert_close(y.cpu(), x, CPU_VS_CUDA[x.dtype], f"{msg} slot {d} tensor {i}")


UPDATES: list[tuple[str, int, Callable[..., Any]]] = [
    (
        "adagrad",
        1,
        lambda t, scale: F.adagrad_(
            t[0], t[1], t[2], [3.0] * len(SIZES), lr=0.1, lr_decay=0.01, weight_decay=0.1, **scale
        ),
    ),
    (
        "rmsprop",
        3,
        lambda t, scale: F.rmsprop_(
            t[0], t[1], t[2], t[3], t[4], lr=0.01, momentum=0.9, centered=True, **scale
        ),
    ),
    (
        "lion",
        1,
        lambda t, scale: F.lion_(
            t[0], t[1], t[2], lr=1e-2, weight_decay=0.1, maximize=True, **scale
        ),
    ),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("name", "n_state", "update"), UPDATES, ids=[u[0] for u in UPDATES])
def test_update_cpu_vs_cuda(
    name: str, n_state: int, update: Callable[..., Any], dtype: torch.dtype
) -> None:
    cpu, cuda = _both(dtype, n_state)
    for _ in range(3):
        update(cpu, {"clip_coef": torch.tensor([0.5])})
        update(cuda, {"clip_coef": torch.tensor([0.5], device="cuda")})
    _compare(cpu, cuda, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norms_cpu_vs_cuda_and_deterministic(dtype: torch.dtype) -> None:
    params = [torch.zeros(n, dtype=dtype, requires_grad=True) for n in SIZES]
    for p in params:
        p.grad = torch.randn(p.shape, dtype=torch.float64).to(dtype)
    gpu = [p.detach().cuda().requires_grad_() for p in params]
    for p, q in zip(params, gpu, strict=True):
        q.grad = p.grad.cuda()  # type: ignore[union-attr]
    for norm_type in (2.0, 1.0, 3.0, 0.0):
        a = gradfuse.grad_norms(params, norm_type)
        b = gradfuse.grad_norms(gpu, norm_type)
        assert torch.equal(b, gradfuse.grad_norms(gpu, norm_type)), "not deterministic"
        assert_close(b.cpu().double(), a.double(), NORM[dtype], f"ord {norm_type}")
    total = gradfuse.clip_grad_norm_(gpu, 0.5)
    assert total.device.type == "cuda"
    theirs = [p.detach().clone().requires_grad_() for p in params]
    for p, q in zip(theirs, params, strict=True):
        p.grad = q.grad.clone()  # type: ignore[union-attr]
    gradfuse.clip_grad_norm_(theirs, 0.5)  # the same clipping on the CPU
    for p, q in zip(gpu, theirs, strict=True):
        assert_close(p.grad.cpu(), q.grad, CPU_VS_CUDA[dtype], "clipped")  # type: ignore[union-attr]


@pytest.mark.parametrize("cls", [Adagrad, RMSprop, Lion], ids=lambda c: c.__name__)
def test_optimizer_with_max_grad_norm_on_cuda(cls: Any) -> None:
    cpu = [torch.randn(n, requires_grad=True) for n in SIZES]
    gpu = [p.detach().cuda().requires_grad_() for p in cpu]
    a, b = cls(cpu, max_grad_norm=0.5), cls(gpu, max_grad_norm=0.5)
    for _ in range(3):
        for p, q in zip(cpu, gpu, strict=True):
            p.grad = torch.randn(p.shape) * 3
            q.grad = p.grad.cuda()
        a.step()
        b.step()
    for p, q in zip(cpu, gpu, strict=True):
        assert_close(q.detach().cpu(), p.detach(), CPU_VS_CUDA[torch.float32], cls.__name__)
