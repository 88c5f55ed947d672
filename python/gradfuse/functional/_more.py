"""Fused in-place Adagrad, RMSprop and Lion updates over lists of arrays or tensors.

The pattern of :func:`gradfuse.functional.sgd_`: every argument is checked first, then the
tensors are grouped by (device, dtype) into one native call each. State lists are the caller's
(one entry per param, already initialised as the torch optimizer initialises them).

Every function also takes the low-precision keywords (off by default; see
:class:`gradfuse.functional._multi_tensor.LowPrecision`): ``master_params``, ``kahan_comps``,
``rounding`` and ``seed``; state lists may be float32 for float16/bfloat16 params, or
bfloat16 for float32 params.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

from gradfuse import _buffers, _native
from gradfuse._compile import traceable
from gradfuse.functional import _capturable, _steps
from gradfuse.functional._multi_tensor import GradScaling, LowPrecision, group
from gradfuse.functional._optim import to_float

_SCALING_NAMES = ("grad_scale", "found_inf", "clip_coef")


def _scaling_kwargs(scaling: GradScaling, device: int) -> dict[str, int]:
    return dict(zip(_SCALING_NAMES, scaling.pointers(device), strict=True))


def _require_entries(op: str, name: str, values: Sequence[Any]) -> None:
    for i, x in enumerate(values):
        if x is None:
            raise ValueError(
                f"{op}: {name}[{i}] is None; every param needs its {name} entry (initialise it "
                f"as the torch optimizer does before the first step)"
            )


def _is_skipped(found_inf: Any) -> bool:
    """Whether GradScaler's verdict says to skip this step (read once, on the host)."""
    if found_inf is None:
        return False
    if _buffers._is_torch_tensor(found_inf):
        return bool(found_inf.item() != 0)
    return bool(float(found_inf.reshape(-1)[0]) != 0)


def advance_steps(op: str, state_steps: MutableSequence[Any], n: int, skipped: bool) -> list[float]:
    """Add one to every step counter (unless the step is skipped); return the new values.

    Entries are 0-dim torch tensors (updated in place, as torch's optimizers keep them) or plain
    numbers (replaced in the list).
    """
    if len(state_steps) != n:
        raise ValueError(
            f"{op}: expected one entry of state_steps per param, got {len(state_steps)} for {n}"
        )
    if n and _steps.all_tensors(state_steps):
        # The optimizers' case: one _foreach_add_ and one read for the whole list.
        if skipped:
            return [_steps.value(s) for s in state_steps]
        return _steps.increment_all(state_steps)
    if any(_buffers._is_torch_tensor(s) for s in state_steps):
        raise TypeError(f"{op}: state_steps must be all tensors or all numbers")
    values = []
    for i, s in enumerate(state_steps):
        v = float(s) + (0.0 if skipped else 1.0)
        state_steps[i] = v
        values.append(v)
    return values


def advance_steps_on_device(
    op: str, state_steps: MutableSequence[Any], n: int, found_inf: Any
) -> None:
    """Add ``1 - found_inf`` to every step counter without reading ``found_inf`` on the host
    when the counters are tensors (no synchronisation when they live on found_inf's device, as
    with ``capturable=True``; torch's non-capturable CPU counters need the copy anyway)."""
    if len(state_steps) != n:
        raise ValueError(
            f"{op}: expected one entry of state_steps per param, got {len(state_steps)} for {n}"
        )
    if (
        not _steps.all_tensors(state_steps)
        or found_inf is None
        or not _buffers._is_torch_tensor(found_inf)
    ):
        advance_steps(op, state_steps, n, _is_skipped(found_inf))
        return
    import torch

    tensors = list(state_steps)

    torch._foreach_add_(tensors, 1)
    by_device: dict[Any, list[Any]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    for device, steps in by_device.items():
        f = found_inf.to(device, torch.float32, non_blocking=True).reshape(())
        torch._foreach_sub_(steps, [f.to(s.dtype) for s in steps])


@traceable(written=("master_params", "kahan_comps", "params", "state_sums", "state_steps"))
def adagrad_(
    params: Sequence[Any],
    grads: Sequence[Any],
    state_sums: Sequence[Any],
    state_steps: MutableSequence[Any],
    *,
    lr: float | Any = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One Adagrad step, in place, following ``torch.optim.Adagrad`` (foreach=False).

    ``state_sums[i]`` is the running sum of squared gradients of ``params[i]`` (torch initialises
    it to ``initial_accumulator_value``); ``state_steps[i]`` is its step count, incremented here
    before the update (a 0-dim tensor, updated in place, or a number, replaced in the list).
    The decayed rate ``lr / (1 + (step - 1) * lr_decay)`` is computed per step value on the
    host in double. ``grad_scale`` / ``found_inf`` / ``clip_coef`` as in :func:`sgd_`; a
    nonzero ``found_inf`` also leaves the step counts unchanged.
    """
    lr_f = to_float(lr, "lr")
    lr_decay_f = to_float(lr_decay, "lr_decay")
    weight_decay_f = to_float(weight_decay, "weight_decay")
    eps_f = to_float(eps, "eps")
    n = len(params)
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("state_sums", state_sums),
    ]
    _require_entries("adagrad_", "state_sums", state_sums)
    scaling = GradScaling(grad_scale, found_inf, clip_coef)
    scaling.check("adagrad_")
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    buffers, depth = lowprec.prepare_buffers("adagrad_", slots, ("params", "state_sums"))
    skipped = _is_skipped(found_inf)
    steps = advance_steps("adagrad_", state_steps, n, skipped)
    if skipped:
        return
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, steps, *lowprec.layout)):
        step = steps[g.indices[0]]
        core.adagrad(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            clr=lr_f / (1 + (step - 1) * lr_decay_f),
            eps=eps_f,
            weight_decay=weight_decay_f,
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g.device),
            **lowprec.kwargs(g, k),
        )


@traceable(
    written=(
        "master_params",
        "kahan_comps",
        "params",
        "square_avgs",
        "grad_avgs",
        "momentum_buffer_list",
        "state_steps",
    )
)
def rmsprop_(
    params: Sequence[Any],
    grads: Sequence[Any],
    square_avgs: Sequence[Any],
    grad_avgs: Sequence[Any] | None = None,
    momentum_buffer_list: Sequence[Any] | None = None,
    state_steps: MutableSequence[Any] | None = None,
    *,
    lr: float | Any = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    capturable: bool = False,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One RMSprop step, in place, following ``torch.optim.RMSprop`` (foreach=False).

    ``grad_avgs`` is needed when ``centered``, ``momentum_buffer_list`` when ``momentum > 0``
    (torch initialises all state to zeros). ``state_steps``, if given, is incremented (the
    update itself does not depend on it). Scaling arguments as in :func:`sgd_`.

    ``capturable=True`` (CUDA graphs): no host reads; a tensor ``lr`` is read by the kernel
    on the device, ``state_steps`` (tensors on the params' devices) are advanced there.
    """
    lr_f: Any = _capturable.check_number(lr, "lr") if capturable else to_float(lr, "lr")
    alpha_f = to_float(alpha, "alpha")
    eps_f = to_float(eps, "eps")
    weight_decay_f = to_float(weight_decay, "weight_decay")
    momentum_f = to_float(momentum, "momentum")
    n = len(params)
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("square_avgs", square_avgs),
    ]
    if centered:
        if grad_avgs is None:
            raise ValueError("rmsprop_: centered=True needs grad_avgs, one entry per param")
        slots.append(("grad_avgs", grad_avgs))
    if momentum_f > 0:
        if momentum_buffer_list is None:
            raise ValueError(
                "rmsprop_: momentum > 0 needs momentum_buffer_list, one entry per param"
            )
        slots.append(("momentum_buffer_list", momentum_buffer_list))
    for name, values in slots[2:]:
        _require_entries("rmsprop_", name, values)
    if capturable:
        if state_steps is not None:
            _capturable.check_counters("rmsprop_", "state_steps", state_steps, params)
        _capturable.check_found_inf("rmsprop_", found_inf)
    scaling = GradScaling(grad_scale, found_inf, clip_coef)
    scaling.check("rmsprop_")
    written = ("params", "square_avgs", "grad_avgs", "momentum_buffer_list")
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    buffers, depth = lowprec.prepare_buffers("rmsprop_", slots, written)
    if state_steps is not None:
        if capturable:
            _capturable.advance(state_steps, found_inf)
        else:
            advance_steps_on_device("rmsprop_", state_steps, n, found_inf)
    # A nonzero found_inf is read by the kernels themselves (on the device): nothing written.
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, None, *lowprec.layout)):
        table: Any = None
        table_kw: dict[str, int] = {}
        if capturable:  # -lr per tensor, read on the device (a tensor lr may change per replay)
            table, table_ptr, stride = _capturable.build_table(
                g, _capturable.group_zeros(g), [-_capturable.column_of(lr_f, g)]
            )
            table_kw = {"step_table": table_ptr, "step_table_stride": stride}
            lr_f_host = 0.0
        else:
            lr_f_host = lr_f
        core.rmsprop(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            lr=lr_f_host,
            alpha=alpha_f,
            eps=eps_f,
            weight_decay=weight_decay_f,
            momentum=momentum_f,
            centered=bool(centered),
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g.device),
            **lowprec.kwargs(g, k),
            **table_kw,
        )
        del table


@traceable(written=("master_params", "kahan_comps", "params", "exp_avgs"))
def lion_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    *,
    lr: float | Any = 1e-4,
    beta1: float = 0.9,
    beta2: float = 0.99,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One Lion step (Chen et al. 2023), in place, for every ``params[i]``.

    ``c = beta1 * m + (1 - beta1) * g``;  ``p = p * (1 - lr * weight_decay) - lr * sign(c)``;
    ``m = beta2 * m + (1 - beta2) * g``, with ``m = exp_avgs[i]`` (zeros before the first step)
    and ``sign(0) = 0``. Scaling arguments as in :func:`sgd_`.
    """
    lr_f = to_float(lr, "lr")
    beta1_f = to_float(beta1, "beta1")
    beta2_f = to_float(beta2, "beta2")
    weight_decay_f = to_float(weight_decay, "weight_decay")
    n = len(params)
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
    ]
    _require_entries("lion_", "exp_avgs", exp_avgs)
    scaling = GradScaling(grad_scale, found_inf, clip_coef)
    scaling.check("lion_")
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    buffers, depth = lowprec.prepare_buffers("lion_", slots, ("params", "exp_avgs"))
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, None, *lowprec.layout)):
        core.lion(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            lr=lr_f,
            beta1=beta1_f,
            beta2=beta2_f,
            weight_decay=weight_decay_f,
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g.device),
            **lowprec.kwargs(g, k),
        )
