"""Trajectory comparison shared by the optimizer tests: the same gradients fed to a gradfuse
optimizer and to torch's for-loop reference, compared with the tolerance table."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

import tolerances

OptimFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

# gradfuse's extensions of every optimizer's constructor (DESIGN.md §1: keyword-only, off by
# default), last of all: clipping, then the low-precision policies (issue 8). Written out here
# as (name, kind, default): the check of gradfuse's defaults, independent of the code.
EXTENSIONS = [
    ("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, None),
    ("master_weights", inspect.Parameter.KEYWORD_ONLY, False),
    ("state_dtype", inspect.Parameter.KEYWORD_ONLY, None),
    ("rounding", inspect.Parameter.KEYWORD_ONLY, "nearest"),
    ("kahan", inspect.Parameter.KEYWORD_ONLY, False),
]

SIZES = (1, 7, 4097, 0)  # odd sizes, and an empty tensor, all in one multi-tensor call


def make_params(
    shapes: Sequence[tuple[int, ...] | int], dtype: torch.dtype, device: str = "cpu"
) -> list[torch.Tensor]:
    return [torch.randn(s, dtype=torch.float64).to(dtype=dtype, device=device) for s in shapes]


def run_trajectory(
    make_opt: OptimFactory,
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Step an optimizer over fixed gradient sequences; returns the final params."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    opt = make_opt(ps)
    for step_grads in grads:
        for p, g in zip(ps, step_grads, strict=True):
            p.grad = g.to(p.dtype).clone()
        opt.step()
    return [p.detach() for p in ps], opt


def random_grads(
    params: list[torch.Tensor], steps: int, dtype: torch.dtype | None = None
) -> list[list[torch.Tensor]]:
    dt = dtype or params[0].dtype
    return [
        [torch.randn(p.shape, dtype=torch.float64).to(dtype=dt, device=p.device) for p in params]
        for _ in range(steps)
    ]


def compare_with_torch(
    ours: OptimFactory,
    theirs: OptimFactory,
    dtype: torch.dtype,
    *,
    shapes: Sequence[tuple[int, ...] | int] = SIZES,
    steps: int = 50,
    device: str = "cpu",
    msg: str = "",
) -> None:
    """Run both optimizers over the same gradients and check the DESIGN.md §7 contract."""
    params = make_params(shapes, dtype, device)
    grads = random_grads(params, steps)
    got, _ = run_trajectory(ours, params, grads)
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        # torch in the same precision, and torch in float64 from the same start and gradients.
        same, _ = run_trajectory(theirs, params, grads)
        ref, _ = run_trajectory(
            theirs,
            [p.double() for p in params],
            [[g.double() for g in gs] for gs in grads],
        )
        for i, (a, b, r) in enumerate(zip(got, same, ref, strict=True)):
            tolerances.assert_low_precision(a, b, r, msg=f"{msg} param {i}")
    else:
        want, _ = run_trajectory(theirs, params, grads)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            tolerances.assert_close(a, b, tolerances.TRAJECTORY[dtype], msg=f"{msg} param {i}")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor (NaN-safe, sign-of-zero-safe equality)."""
    c = t.detach().contiguous()
    return c.view(torch.uint8) if c.numel() else c


def snapshot(tensors: Sequence[Any]) -> list[Any]:
    """Bitwise copies, to prove a failed call wrote nothing."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
        elif isinstance(t, torch.Tensor):
            out.append(t.detach().clone())
        else:
            out.append(t.copy())
    return out


def assert_unchanged(before: Sequence[Any], after: Sequence[Any]) -> None:
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a is None:
            assert b is None
            continue
        if isinstance(a, torch.Tensor):
            assert torch.equal(_bits(a), _bits(b)), f"tensor {i} changed"
        else:
            assert a.tobytes() == b.tobytes(), f"array {i} changed"
