"""Schedule-free AdamW and SGD (Defazio et al. 2024, "The Road Less Scheduled"), fused.

Follows the ``schedulefree`` package (``AdamWScheduleFree``, ``SGDScheduleFree``, version 1.4.1)
expression for expression. The params hold y (where gradients are taken) during training; the
state ``z`` is the base optimizer's sequence; x, the average that is evaluated, is reached from y
and z by one lerp (:func:`schedule_free_eval_`) and left the same way
(:func:`schedule_free_train_`).

The per-group bookkeeping of the reference (its param-group keys ``k``, ``lr_max``,
``weight_sum``, ``scheduled_lr``) stays the caller's: each step function takes the group's
values before the step and returns them after it (:class:`ScheduleFreeGroup`), or None when
AMP's ``found_inf`` skipped the step (nothing changed, bookkeeping included). From them the
spec computes the step's host scalars: the warm-up learning rate, ``ckp1 = weight /
weight_sum`` and AdamW's bias correction.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple, Unpack

from gradfuse import _native
from gradfuse._options import check_options, option_names
from gradfuse.functional import _engine, _steps
from gradfuse.functional._engine import (
    EXP_AVG_SQ,
    Hyper,
    PrecisionOptions,
    Spec,
    State,
    StepOptions,
)
from gradfuse.functional._multi_tensor import group


class ScheduleFreeGroup(NamedTuple):
    """A param group's schedule-free bookkeeping after a step (the reference's group keys)."""

    k: int  # steps taken
    scheduled_lr: float  # this step's learning rate after warm-up (for logging)
    lr_max: float  # the largest scheduled learning rate so far (-1.0 before the first step)
    weight_sum: float  # the sum of the averaging weights so far


class _Schedule(NamedTuple):
    lr: float
    lr_max: float
    weight_sum: float
    ckp1: float


def _schedule(h: Hyper) -> _Schedule:
    """The reference's per-group expressions for step ``k + 1`` (AdamWScheduleFree.step)."""
    k = h.k
    sched = (k + 1) / h.warmup_steps if k < h.warmup_steps else 1.0
    lr = h.lr * sched
    lr_max = max(lr, h.lr_max)
    weight = ((k + 1) ** h.r) * (lr_max**h.weight_lr_power)
    weight_sum = h.weight_sum + weight
    try:
        ckp1 = weight / weight_sum
    except ZeroDivisionError:
        ckp1 = 0.0
    return _Schedule(lr, lr_max, weight_sum, ckp1)


def _adamw_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    s = _schedule(h)
    return {
        "lr": s.lr,
        "beta2": h.beta2,
        "one_minus_beta2": 1 - h.beta2,
        "bias_correction2": 1 - h.beta2 ** (h.k + 1),
        "eps": h.eps,
        "weight_decay": h.weight_decay,
        "ckp1": s.ckp1,
        "y_coef": s.lr * (h.beta1 * (1 - s.ckp1) - 1),
    }


def _sgd_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    s = _schedule(h)
    return {
        "lr": s.lr,
        "weight_decay": h.weight_decay,
        "ckp1": s.ckp1,
        "y_coef": s.lr * (h.momentum * (1 - s.ckp1) - 1),
    }


_SCHEDULE_HYPER = ("warmup_steps", "r", "weight_lr_power", "lr_max", "weight_sum")

# step_on_host: the group bookkeeping advances on the host, so AMP's verdict is read there and
# a skipped step changes nothing (the native calls are not made at all).
SCHEDULE_FREE_ADAMW = Spec(
    op="schedule_free_adamw_",
    kernel="schedule_free_adamw",
    hyper=("lr", "beta1", "beta2", "eps", "weight_decay", *_SCHEDULE_HYPER),
    state=(State("zs", "z"), EXP_AVG_SQ),
    scalars=_adamw_scalars,
    step_on_host=True,
)

SCHEDULE_FREE_SGD = Spec(
    op="schedule_free_sgd_",
    kernel="schedule_free_sgd",
    hyper=("lr", "momentum", "weight_decay", *_SCHEDULE_HYPER),
    state=(State("zs", "z"),),
    scalars=_sgd_scalars,
    step_on_host=True,
)


def _step(spec: Spec, arguments: dict[str, Any]) -> ScheduleFreeGroup | None:
    """Check, run ``spec`` on a step's arguments (its ``locals()``) and return the group's
    bookkeeping after the step."""
    op = spec.op
    try:
        k = operator.index(arguments["k"])
    except TypeError:
        raise TypeError(f"{op}: k must be an int (steps taken), got {arguments['k']!r}") from None
    if k < 0:
        raise ValueError(f"{op}: k must be >= 0 (steps taken), got {k}")
    h, call = _engine.checked(spec, {**arguments, "k": k})
    _engine.run(spec, call, h)
    if _steps.found_inf_is_set(call.found_inf):  # checked by run: AMP skipped the step
        return None
    s = _schedule(h)
    return ScheduleFreeGroup(k + 1, s.lr, s.lr_max, s.weight_sum)


@_engine.with_options
def schedule_free_adamw_(
    params: Sequence[Any],
    grads: Sequence[Any],
    zs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    *,
    k: int,
    lr_max: float,
    weight_sum: float,
    lr: float | Any = 0.0025,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> ScheduleFreeGroup | None:
    """One schedule-free AdamW step, in place (``schedulefree.AdamWScheduleFree``).

    ``params`` hold y (train mode); ``zs[i]`` starts as a copy of ``params[i]``,
    ``exp_avg_sqs[i]`` as zeros. ``k``, ``lr_max`` and ``weight_sum`` are the param group's
    bookkeeping before this step (0, -1.0 and 0.0 before the first); the returned
    :class:`ScheduleFreeGroup` holds them after it (None: ``found_inf`` skipped the step).
    Per element, with ``lr`` warmed up linearly over ``warmup_steps`` and
    ``ckp1 = weight / weight_sum``, ``weight = (k + 1) ** r * lr_max ** weight_lr_power``::

        v  = beta2 * v + (1 - beta2) * g * g
        gn = g / (sqrt(v / (1 - beta2 ** (k + 1))) + eps) + weight_decay * y
        y  = lerp(y, z, ckp1) + lr * (beta1 * (1 - ckp1) - 1) * gn
        z  = z - lr * gn

    Unlike the reference, the gradients are not modified. AMP/clipping and low-precision
    arguments: see :mod:`gradfuse.functional._updates`.
    """
    return _step(SCHEDULE_FREE_ADAMW, locals())


@_engine.with_options
def schedule_free_sgd_(
    params: Sequence[Any],
    grads: Sequence[Any],
    zs: Sequence[Any],
    *,
    k: int,
    lr_max: float,
    weight_sum: float,
    lr: float | Any = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> ScheduleFreeGroup | None:
    """One schedule-free SGD step, in place (``schedulefree.SGDScheduleFree``).

    As :func:`schedule_free_adamw_` without the second moment (``gn = g + weight_decay * y``)
    and with ``momentum`` in place of ``beta1``.
    """
    return _step(SCHEDULE_FREE_SGD, locals())


# --- the train/eval switch ---------------------------------------------------------------------


def _switch(
    op: str,
    params: Sequence[Any],
    zs: Sequence[Any],
    weight: float,
    options: PrecisionOptions,
) -> None:
    """``p = lerp(p, z, weight)`` for every param, as one native pass per (device, dtype).

    The native rule's slots are those of a step (param, gradient, z): z in the state slots,
    so the param policies and a state dtype apply as they do to a step. Its gradient slot is
    neither read nor written; ``zs`` stand in for it (read-only, so no copy and no aliasing)."""
    check_options(op, options, option_names(PrecisionOptions))
    lowprec = _engine.lowprec_of(options)
    slots: list[tuple[str, Sequence[Any]]] = [("params", params), ("zs", zs), ("zs", zs)]
    buffers, depth = lowprec.prepare_buffers(op, slots, ("params",))
    core = _native.core()
    n = len(params)
    for k, g in enumerate(group(buffers, depth, n, None, *lowprec.layout)):
        core.optimizer_step(
            "schedule_free_switch",
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            [weight],
            {},
            **lowprec.kwargs(g, k),
        )


def _beta(op: str, beta1: Any) -> float:
    value = _engine.to_float(beta1, "beta1")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{op}: beta1 (SGD's momentum) must be in (0, 1], got {value}")
    return value


@_engine.with_options
def schedule_free_eval_(
    params: Sequence[Any],
    zs: Sequence[Any],
    *,
    beta1: float,
    **options: Unpack[PrecisionOptions],
) -> None:
    """Moves ``params`` from y to x in place: ``p = lerp(p, z, 1 - 1 / beta1)``, one fused pass
    (``optimizer.eval()`` of the reference; ``beta1`` is SGD's ``momentum`` for SGD)."""
    op = "schedule_free_eval_"
    b = _beta(op, beta1)
    _switch(op, params, zs, 1 - 1 / b, options)


@_engine.with_options
def schedule_free_train_(
    params: Sequence[Any],
    zs: Sequence[Any],
    *,
    beta1: float,
    **options: Unpack[PrecisionOptions],
) -> None:
    """Moves ``params`` from x to y in place: ``p = lerp(p, z, 1 - beta1)``, one fused pass
    (``optimizer.train()`` of the reference)."""
    op = "schedule_free_train_"
    b = _beta(op, beta1)
    _switch(op, params, zs, 1 - b, options)
