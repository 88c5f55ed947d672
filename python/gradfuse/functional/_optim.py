"""Fused in-place optimizer updates over lists of arrays (numpy) or tensors (torch).

These are the low-level layer under :mod:`gradfuse.optim`: no autograd, no optimizer state
bookkeeping; the caller owns every buffer. Each function checks every argument first and only
then writes, so a call that raises leaves every array as it was.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

from gradfuse import _buffers, _native
from gradfuse._compile import traceable
from gradfuse.functional import _capturable
from gradfuse.functional._multi_tensor import GradScaling, LowPrecision, group
from gradfuse.functional._steps import found_inf_is_set


def to_float(value: Any, name: str) -> float:
    """A hyperparameter as a Python float (a 1-element tensor is read once, on the host)."""
    if hasattr(value, "numel") and hasattr(value, "item"):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number or a 1-element tensor, got {_buffers.describe(value)}"
            )
        return float(value.item())
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a number, got {value!r}") from None


def _empty_like(x: Any, dtype: Any = None) -> Any:
    if _buffers._is_torch_tensor(x):
        import torch

        return torch.empty_like(x, dtype=dtype)
    import numpy as np

    return np.empty_like(x, dtype=dtype)


@traceable(
    written=("master_params", "kahan_comps", "params", "momentum_buffers"),
    creates={"momentum_buffers": lambda kw: kw.get("momentum", 0.0) != 0},
)
def sgd_(
    params: Sequence[Any],
    grads: Sequence[Any],
    momentum_buffers: MutableSequence[Any] | None = None,
    *,
    lr: float | Any,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float | Any = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
    state_dtype: Any = None,
) -> None:
    """One SGD step, in place, for every ``params[i]`` with gradient ``grads[i]``.

    Follows ``torch.optim.SGD``: with ``momentum != 0`` a buffer per parameter is kept in
    ``momentum_buffers``; an entry that is ``None`` is created here (in ``params[i]``'s dtype
    and layout) and initialised from the gradient, as torch does on the first step.

    Works on numpy arrays and on torch tensors (CPU, or CUDA when gradfuse was built with it);
    all params of one call are grouped by (device, dtype) and each group is one native call.

    ``grad_scale`` / ``found_inf`` (torch.amp.GradScaler's scale and verdict) and ``clip_coef``
    (a global-norm clipping factor, at most 1) are optional 1-element float32 tensors applied to
    the gradients inside the update: grads are divided by ``grad_scale`` and multiplied by
    ``clip_coef``; a nonzero ``found_inf`` makes the call change nothing.

    Low precision (keyword-only, off by default): ``master_params``, ``kahan_comps``,
    ``rounding`` and ``seed`` as in :func:`gradfuse.functional.adam_`; ``state_dtype`` is the
    dtype of the momentum buffers created here (None: the params').

    A tensor ``lr`` (1 element) is read by the kernel where the params live, not on the host:
    a CUDA ``lr`` costs no device synchronisation (as torch's fused SGD), so an LR scheduler
    can change it in place between replays of a captured CUDA graph.
    """
    device_lr = _buffers._is_torch_tensor(lr) and bool(lr.is_floating_point())  # type: ignore[union-attr]
    lr_t = _capturable.check_number(lr, "lr") if device_lr else None
    lr_f = 0.0 if lr_t is not None else to_float(lr, "lr")
    momentum_f = to_float(momentum, "momentum")
    dampening_f = to_float(dampening, "dampening")
    weight_decay_f = to_float(weight_decay, "weight_decay")
    has_momentum = momentum_f != 0.0
    n = len(params)
    slots: list[tuple[str, Sequence[Any]]] = [("params", params), ("grads", grads)]
    if has_momentum:
        if momentum_buffers is None:
            raise ValueError(
                "sgd_: momentum != 0 needs momentum_buffers, a list with one entry per param "
                "(None entries are created and initialised from the gradient)"
            )
        slots.append(("momentum_buffers", momentum_buffers))
    scaling = GradScaling(grad_scale, found_inf, clip_coef)
    scaling.check("sgd_")
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    buffers, depth = lowprec.prepare_buffers("sgd_", slots, ("params", "momentum_buffers"))
    first = [False] * n
    created: dict[int, Any] = {}
    if has_momentum:
        assert momentum_buffers is not None
        if any(b is None for b in buffers[2 * n : 3 * n]) and found_inf_is_set(found_inf):
            # A new buffer is initialised from this step's gradient; with AMP's inf/NaN verdict
            # there is none to take, so nothing is created (read on the host, first steps only).
            return
        for i in range(n):
            if buffers[2 * n + i] is None:
                new = _empty_like(params[i], state_dtype)
                b = _buffers.as_buffer(new, f"sgd_: momentum_buffers[{i}]", writable=True)
                buffers[2 * n + i] = b
                ref = buffers[i]
                if ref is not None and b.dtype != ref.dtype:
                    lowprec.mismatches.append((2, i))
                created[i] = new
                first[i] = True
    if created:
        lowprec.check("sgd_", buffers, n)  # the new buffers' dtype, before any is handed out
    for i, new in created.items():
        assert momentum_buffers is not None
        momentum_buffers[i] = new

    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, first, *lowprec.layout)):
        table: Any = None
        table_kw: dict[str, int] = {}
        if lr_t is not None:  # lr per tensor, read by the kernel on the params' device
            table, table_ptr, stride = _capturable.build_table(
                g, _capturable.group_zeros(g), [lr_t]
            )
            table_kw = {"step_table": table_ptr, "step_table_stride": stride}
        core.sgd(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            lr=lr_f,
            momentum=momentum_f,
            dampening=dampening_f,
            weight_decay=weight_decay_f,
            nesterov=bool(nesterov),
            maximize=bool(maximize),
            first_step=first[g.indices[0]],
            **dict(
                zip(
                    ("grad_scale", "found_inf", "clip_coef"),
                    scaling.pointers(g.device),
                    strict=True,
                )
            ),
            **lowprec.kwargs(g, k),
            **table_kw,
        )
        del table
