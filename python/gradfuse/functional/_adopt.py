"""ADOPT and AdEMAMix (issue 18): their specs and functional updates on the optimizer engine.

Each follows its reference implementation expression for expression on the host (the per-step
scalars, in double) and operation for operation per element (``src/gradfuse/math/adopt.h``,
``ademamix.h``):

- :func:`adopt_`: ``pytorch_optimizer.ADOPT`` (4.1.0), the authors' rule (Taniguchi et al.
  2024, Algorithm 1 with the ``step ** 0.25`` clip of their code) with pytorch_optimizer's
  weight decay options;
- :func:`ademamix_`: bitsandbytes' ``AdEMAMix`` (0.50.2, 32-bit state), Pagliardini et al.
  2024 with the ``t_alpha`` / ``t_beta3`` warm-ups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableSequence, Sequence
from typing import Any, Unpack

from gradfuse import _native
from gradfuse._compile import traceable
from gradfuse.functional import _engine
from gradfuse.functional._engine import (
    EXP_AVG,
    EXP_AVG_SQ,
    MOMENTS,
    Hyper,
    Spec,
    State,
    StepOptions,
    written,
)

_WD_MODE = _native.codes("weight_decay_mode")


def default_clip_lambda(step: int) -> float:
    """ADOPT's default clip schedule, ``step ** 0.25`` (the authors' and pytorch_optimizer's)."""
    return math.pow(step, 0.25)


# --- ADOPT -----------------------------------------------------------------------------------


def _adopt_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # pytorch_optimizer.ADOPT._step_per_param: apply_weight_decay, then step 1 initialises
    # exp_avg_sq, later steps clip g / max(sqrt(v), eps) to clip_lambda(step).
    step = int(step)
    clip = math.inf
    if step > 1 and h.clip_lambda is not None:
        clip = float(h.clip_lambda(step))
    return {
        "lr": h.lr,
        "weight_decay": h.weight_decay,
        "lr_decay": 1.0 - h.weight_decay * (1.0 if h.fixed_decay else h.lr),
        "exp_avg_weight": 1.0 - h.beta1,
        "beta2": h.beta2,
        "one_minus_beta2": 1.0 - h.beta2,
        "eps": h.eps,
        "clip": clip,
        "first_step": step == 1,  # an Args flag that depends on the step, as RAdam's rectify
    }


def _adopt_modes(h: Hyper) -> dict[str, Any]:
    if h.weight_decay == 0.0:
        mode = _WD_MODE["none"]
    elif h.weight_decouple:
        mode = _WD_MODE["decoupled"]
    elif h.weight_decay > 0.0:
        mode = _WD_MODE["l2"]
    else:  # pytorch_optimizer adds a negative L2 term to nothing (it checks wd > 0)
        mode = _WD_MODE["none"]
    return {"weight_decay_mode": mode, "maximize": bool(h.maximize)}


ADOPT = Spec(
    op="adopt_",
    kernel="adopt",
    hyper=("lr", "beta1", "beta2", "weight_decay", "eps"),
    state=MOMENTS,
    scalars=_adopt_scalars,
    modes=_adopt_modes,
    flags=("weight_decouple", "fixed_decay", "maximize"),
    counters=("state_steps",),
    step_on_host=True,
)


@traceable(written=written(ADOPT))
@_engine.with_options
def adopt_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.9999,
    clip_lambda: Callable[[int], float] | None = default_clip_lambda,
    weight_decay: float = 0.0,
    weight_decouple: bool = False,
    fixed_decay: bool = False,
    eps: float = 1e-6,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> None:
    """One ADOPT step (Taniguchi et al. 2024), in place, as ``pytorch_optimizer.ADOPT``.

    ``state_steps[i]`` is incremented first. Weight decay (``weight_decay > 0``): added to the
    gradient (L2), or with ``weight_decouple`` the param is multiplied by
    ``1 - weight_decay * lr`` (``* 1`` with ``fixed_decay``). Then, on step 1,
    ``exp_avg_sqs[i] += g * g`` and nothing else; on later steps::

        n = clamp(g / max(sqrt(v), eps), -clip, clip)      clip = clip_lambda(step)
        m = lerp(m, n, 1 - beta1);  p -= lr * m;  v = beta2 * v + (1 - beta2) * g * g

    ``clip_lambda=None`` turns the clipping off. ``exp_avgs`` / ``exp_avg_sqs`` start at zero.
    AMP, clipping and low-precision arguments: see :mod:`gradfuse.functional._updates`.
    """
    _check_nonnegative("adopt_", lr=lr, weight_decay=weight_decay, eps=eps)
    if clip_lambda is not None and not callable(clip_lambda):
        raise TypeError(
            f"adopt_: clip_lambda must be a callable of the step or None, got {clip_lambda!r}"
        )
    _engine.update(ADOPT, locals())


# --- AdEMAMix --------------------------------------------------------------------------------


def ademamix_schedules(
    step: float, beta1: float, beta3: float, alpha: float, t_alpha: Any, t_beta3: Any
) -> tuple[float, float]:
    """This step's ``(alpha, beta3)`` under the warm-ups, as bitsandbytes computes them (a
    ``t_alpha`` / ``t_beta3`` of None or 0 is no warm-up)."""
    if t_alpha:
        alpha = min(step * alpha / t_alpha, alpha)
    if t_beta3:
        ln_beta1 = math.log(beta1)
        ln_beta3 = math.log(beta3)
        step_scale = step / t_beta3
        beta3 = min(
            math.exp(
                (ln_beta1 * ln_beta3) / (((1 - step_scale) * ln_beta3) + (step_scale * ln_beta1))
            ),
            beta3,
        )
    return alpha, beta3


def _ademamix_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # bitsandbytes AdEMAMix.update_step (the schedules) and _optimizer_update_32bit_cpu.
    step = int(step)
    beta1, beta2 = h.beta1, h.beta2
    alpha, beta3 = ademamix_schedules(step, beta1, h.beta3, h.alpha, h.t_alpha, h.t_beta3)
    lr, wd = h.lr, h.weight_decay
    return {
        "beta1": beta1,
        "one_minus_beta1": 1.0 - beta1,
        "beta2": beta2,
        "one_minus_beta2": 1.0 - beta2,
        "beta3": beta3,
        "one_minus_beta3": 1.0 - beta3,
        "alpha": alpha,
        "bias_correction1": 1.0 - beta1**step,
        "bias_correction2_sqrt": math.sqrt(1.0 - beta2**step),
        "lr_decay": 1.0 - lr * wd if wd > 0.0 else 1.0,
        "neg_lr": -lr,
        "eps": h.eps,
    }


ADEMAMIX = Spec(
    op="ademamix_",
    kernel="ademamix",
    hyper=("lr", "beta1", "beta2", "beta3", "alpha", "eps", "weight_decay"),
    state=(EXP_AVG, State("exp_avg_slows", "exp_avg_slow"), EXP_AVG_SQ),
    scalars=_ademamix_scalars,
    flags=("t_alpha", "t_beta3", "maximize"),
    counters=("state_steps",),
    step_on_host=True,
)


@traceable(written=written(ADEMAMIX))
@_engine.with_options
def ademamix_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_slows: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    beta3: float = 0.9999,
    alpha: float = 5.0,
    t_alpha: int | None = None,
    t_beta3: int | None = None,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> None:
    """One AdEMAMix step (Pagliardini et al. 2024), in place, as bitsandbytes' ``AdEMAMix``.

    ``state_steps[i]`` is incremented first; with ``step`` its new value::

        m1 = beta1 * m1 + (1 - beta1) * g            (exp_avgs)
        m2 = beta3_t * m2 + (1 - beta3_t) * g        (exp_avg_slows)
        nu = beta2 * nu + (1 - beta2) * g * g        (exp_avg_sqs)
        p  = p * (1 - lr * weight_decay)             (only when weight_decay > 0)
        p -= lr * (m1 / (1 - beta1**step) + alpha_t * m2)
                / (sqrt(nu) / sqrt(1 - beta2**step) + eps)

    ``alpha_t = min(step * alpha / t_alpha, alpha)`` and ``beta3_t`` the half-life warm-up
    from ``beta1`` to ``beta3`` over ``t_beta3`` steps (:func:`ademamix_schedules`); None (or
    0) means no warm-up. State starts at zero. ``maximize`` (not in bitsandbytes) negates the
    gradient. AMP, clipping and low-precision arguments: see
    :mod:`gradfuse.functional._updates`.
    """
    _check_nonnegative("ademamix_", lr=lr, eps=eps)
    _check_warmups(beta1, beta3, t_alpha, t_beta3)
    _engine.update(ADEMAMIX, locals())


def _check_nonnegative(op: str, **values: Any) -> None:
    for name, value in values.items():
        try:
            ok = float(value) >= 0.0
        except (TypeError, ValueError):
            raise TypeError(f"{op}: {name} must be a number, got {value!r}") from None
        if not ok:
            raise ValueError(f"{op}: {name} must be non-negative, got {value!r}")


def _check_warmups(beta1: Any, beta3: Any, t_alpha: Any, t_beta3: Any) -> None:
    """AdEMAMix's warm-up lengths: None or a number of steps; ``t_beta3`` takes logarithms."""
    if t_beta3:
        for name, value in (("beta1", beta1), ("beta3", beta3)):
            if not float(value) > 0.0:
                raise ValueError(
                    f"ademamix_: t_beta3 warm-up takes log({name}), so {name} must be > 0, "
                    f"got {value!r}"
                )
    for name, steps in (("t_alpha", t_alpha), ("t_beta3", t_beta3)):
        if steps is not None and not (isinstance(steps, int | float) and steps >= 0):
            raise ValueError(
                f"ademamix_: {name} must be None or a number of steps >= 0, got {steps!r}"
            )
