"""Fused in-place optimizer updates over lists of arrays (numpy) or tensors (torch).

The low-level layer under :mod:`gradfuse.optim`: no autograd, no state bookkeeping; the caller
owns every buffer. Each update is a :class:`~gradfuse.functional._engine.Spec` (its state lists,
hyperparameters and per-step scalars, with torch's own Python expressions) and a function with
torch's argument names that hands its arguments to the one driver, :func:`_engine.run`: every
argument is checked first and only then written, so a call that raises leaves every array and
counter as it was.

Every update follows torch's for-loop implementation (``torch.optim.<name>``, ``foreach=False``)
and takes, besides its own arguments:

- ``grad_scale`` / ``found_inf`` (torch.amp.GradScaler's scale and verdict) and ``clip_coef`` (a
  global-norm clipping factor, at most 1): optional 1-element float32 tensors applied to the
  gradients inside the update (divided by ``grad_scale``, multiplied by ``clip_coef``); a nonzero
  ``found_inf`` makes the call change nothing (params, state, counters);
- the low-precision keywords (off by default; see
  :class:`gradfuse.functional._multi_tensor.LowPrecision`): ``master_params``, ``kahan_comps``,
  ``rounding`` and ``seed``; state lists may be float32 for float16/bfloat16 params, or
  bfloat16 for float32 params; with ``state_absmax`` (one list of float32 absmax tensors per
  state list, in order) the state lists hold 8-bit block-wise codes (uint8, CPU;
  :mod:`gradfuse.optim._quant8`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableSequence, Sequence
from typing import Any, Unpack

from gradfuse import _native
from gradfuse._compile import traceable
from gradfuse.functional import _engine
from gradfuse.functional._engine import (
    DEVICE_NUMBER,
    EXP_AVG,
    MOMENTS,
    NUMBER_OR_TENSOR,
    CapturableOptions,
    Hyper,
    Negated,
    Spec,
    State,
    StepOptions,
    unchanged,
    written,
)

_WD_MODE = _native.codes("weight_decay_mode")


def _wd_mode(weight_decay: float, decoupled: bool) -> int:
    """The rule's weight decay mode (gf::math::WeightDecayMode): none, L2 or decoupled."""
    if weight_decay == 0.0:
        return _WD_MODE["none"]
    return _WD_MODE["decoupled" if decoupled else "l2"]


def _adam_modes(h: Hyper) -> dict[str, Any]:
    return {
        "weight_decay_mode": _wd_mode(h.weight_decay, h.decoupled_weight_decay),
        "maximize": bool(h.maximize),
    }


# The Adam family's hyperparameters whose betas are numbers (Adamax, NAdam, RAdam); checked in
# this order.
_ADAM_FAMILY_HYPER = (("lr", NUMBER_OR_TENSOR), "beta1", "beta2", "eps", "weight_decay")


# --- SGD -------------------------------------------------------------------------------------


SGD = Spec(
    op="sgd_",
    kernel="sgd",
    hyper=(("lr", DEVICE_NUMBER), "momentum", "dampening", "weight_decay"),
    state=(
        State(
            "momentum_buffers",
            "momentum_buffer",
            when=lambda o: o["momentum"] != 0.0,
            missing="momentum != 0 needs momentum_buffers, a list with one entry per param "
            "(None entries are created and initialised from the gradient)",
        ),
    ),
    scalars=unchanged("lr", "momentum", "dampening", "weight_decay"),
    modes=lambda h: {"nesterov": bool(h.nesterov), "maximize": bool(h.maximize)},
    flags=("nesterov", "maximize"),
    table=("lr",),
    creates="momentum_buffers",
)


@traceable(
    written=written(SGD), creates={"momentum_buffers": lambda kw: kw.get("momentum", 0.0) != 0}
)
@_engine.with_options
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
    state_dtype: Any = None,
    **options: Unpack[StepOptions],
) -> None:
    """One SGD step, in place, for every ``params[i]`` with gradient ``grads[i]``.

    Follows ``torch.optim.SGD``: with ``momentum != 0`` a buffer per parameter is kept in
    ``momentum_buffers``; an entry that is ``None`` is created here (in ``params[i]``'s dtype
    and layout, or ``state_dtype``) and initialised from the gradient, as torch does on the
    first step.

    Works on numpy arrays and on torch tensors (CPU, or CUDA when gradfuse was built with it);
    all params of one call are grouped by (device, dtype) and each group is one native call.
    AMP/clipping and low-precision arguments: see the module docstring.

    A tensor ``lr`` (1 element) is read by the kernel where the params live, not on the host:
    a CUDA ``lr`` costs no device synchronisation (as torch's fused SGD), so an LR scheduler
    can change it in place between replays of a captured CUDA graph.
    """
    _engine.update(SGD, locals())


# --- Adam / AdamW ----------------------------------------------------------------------------


def _adam_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # torch._single_tensor_adam (capturable=False), expression for expression.
    lr, beta1, beta2 = h.lr, h.beta1, h.beta2
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = xp.lr_div(lr, bias_correction1)
    bias_correction2_sqrt = bias_correction2**0.5
    return {
        "weight_decay": h.weight_decay,
        "lr_decay": 1 - lr * h.weight_decay,
        # a tensor beta1 is cast to the param dtype for the lerp, as torch does
        "exp_avg_weight": 1 - xp.param_dtype(beta1),
        "beta2": beta2,
        "one_minus_beta2": 1 - beta2,
        "bias_correction2_sqrt": bias_correction2_sqrt,
        "neg_step_size": -step_size,
        "eps": h.eps,
    }


ADAM = Spec(
    op="adam_",
    kernel="adam",
    hyper=(
        ("lr", NUMBER_OR_TENSOR),
        ("beta1", NUMBER_OR_TENSOR),
        ("beta2", NUMBER_OR_TENSOR),
        "eps",
        "weight_decay",
    ),
    state=(
        *MOMENTS,
        State(
            "max_exp_avg_sqs",
            "max_exp_avg_sq",
            when=lambda o: bool(o["amsgrad"]),
            missing="amsgrad=True needs max_exp_avg_sqs, one per param",
            signed=False,
        ),
    ),
    scalars=_adam_scalars,
    modes=lambda h: {**_adam_modes(h), "amsgrad": bool(h.amsgrad)},
    flags=("amsgrad", "maximize", "decoupled_weight_decay"),
    counters=("state_steps",),
    step_on_host=True,
    table=("lr_decay", "bias_correction2_sqrt", "neg_step_size"),
    capturable=True,
    host_betas=True,
)
ADAMW = dataclasses.replace(ADAM, op="adamw_")


@traceable(written=written(ADAM))
@_engine.with_options
def adam_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    max_exp_avg_sqs: Sequence[Any] | None = None,
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float | Any = 1e-3,
    beta1: float | Any = 0.9,
    beta2: float | Any = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    **options: Unpack[CapturableOptions],
) -> None:
    """One Adam step (AdamW with ``decoupled_weight_decay=True``), in place.

    Follows ``torch.optim.Adam`` (for-loop implementation): ``state_steps[i]`` is incremented
    and its new value gives the bias corrections; ``exp_avgs``, ``exp_avg_sqs`` and, with
    ``amsgrad``, ``max_exp_avg_sqs`` are updated in place (zeros on the first step, as torch
    initialises them). ``lr``, ``beta1`` and ``beta2`` may be 1-element tensors.

    ``capturable=True`` (torch's option, for CUDA graphs): no host synchronisation. Every
    ``state_steps`` entry must be a 1-element torch tensor on its param's device; it is
    advanced there (``+= 1``, then ``-= found_inf``), the bias corrections and step sizes are
    computed there with tensor ops (``lr`` may be a device tensor, read on the device at every
    step), and ``found_inf`` is read by the kernel. ``beta1`` / ``beta2`` must then be Python
    numbers. Works on CPU tensors too (same results as ``capturable=False``).
    """
    _engine.update(ADAMW if decoupled_weight_decay else ADAM, locals())


@traceable(written=written(ADAMW))
@_engine.with_options
def adamw_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    max_exp_avg_sqs: Sequence[Any] | None = None,
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float | Any = 1e-3,
    beta1: float | Any = 0.9,
    beta2: float | Any = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
    **options: Unpack[CapturableOptions],
) -> None:
    """One AdamW step in place: :func:`adam_` with decoupled weight decay (torch.optim.AdamW)."""
    _engine.update(ADAMW, {**locals(), "decoupled_weight_decay": True})


# --- Adamax ----------------------------------------------------------------------------------


def _adamax_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # torch._single_tensor_adamax (capturable=False).
    bias_correction = 1 - h.beta1**step
    clr = xp.lr_div(h.lr, bias_correction)
    return {
        "weight_decay": h.weight_decay,
        "exp_avg_weight": 1 - h.beta1,
        "beta2": h.beta2,
        "eps": h.eps,
        "neg_clr": -clr,
    }


ADAMAX = Spec(
    op="adamax_",
    kernel="adamax",
    hyper=_ADAM_FAMILY_HYPER,
    state=(EXP_AVG, State("exp_infs", "exp_inf", signed=False)),
    scalars=_adamax_scalars,
    counters=("state_steps",),
    step_on_host=True,
    table=("neg_clr",),
    capturable=True,
)


@traceable(written=written(ADAMAX))
@_engine.with_options
def adamax_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_infs: Sequence[Any],
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float | Any = 2e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    **options: Unpack[CapturableOptions],
) -> None:
    """One Adamax step in place (torch.optim.Adamax, for-loop implementation).

    ``exp_infs`` is the exponentially weighted infinity norm; see :func:`adam_` for
    ``state_steps`` and ``capturable``.
    """
    _engine.update(ADAMAX, locals())


# --- NAdam -----------------------------------------------------------------------------------


def _nadam_mu(h: Hyper, step: Any) -> Any:
    return h.beta1 * (1.0 - 0.5 * (0.96 ** (step * h.momentum_decay)))


def _nadam_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # torch._single_tensor_nadam (capturable=False), expression for expression; with a tensor
    # lr the products with lr are in lr's dtype on both paths (xp.lr_cast).
    lr = h.lr
    mu = _nadam_mu(h, step)
    mu_next = h.beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * h.momentum_decay)))
    mu_product = counters["mu_products"]
    bias_correction2 = 1 - h.beta2**step
    mu_product_next = mu_product * mu_next
    cast = xp.lr_cast
    return {
        "weight_decay": h.weight_decay,
        "lr_decay": 1 - lr * h.weight_decay,
        "exp_avg_weight": 1 - h.beta1,
        "beta2": h.beta2,
        "one_minus_beta2": 1 - h.beta2,
        "bias_correction2": bias_correction2,
        "eps": h.eps,
        "grad_coef": -lr * cast(1.0 - mu, lr) / cast(1.0 - mu_product, lr),
        "exp_avg_coef": (-lr * cast(mu_next, lr)) / cast(1.0 - mu_product_next, lr),
    }


NADAM = Spec(
    op="nadam_",
    kernel="nadam",
    hyper=(*_ADAM_FAMILY_HYPER, "momentum_decay"),
    state=MOMENTS,
    scalars=_nadam_scalars,
    modes=_adam_modes,
    flags=("decoupled_weight_decay", "maximize"),
    counters=("state_steps", "mu_products"),
    counter_factors=lambda h, step: {"mu_products": _nadam_mu(h, step)},
    step_on_host=True,
    table=("lr_decay", "bias_correction2", "grad_coef", "exp_avg_coef"),
    capturable=True,
)


@traceable(written=written(NADAM))
@_engine.with_options
def nadam_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    mu_products: MutableSequence[Any] | Sequence[Any],
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float | Any = 2e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    **options: Unpack[CapturableOptions],
) -> None:
    """One NAdam step in place (torch.optim.NAdam, for-loop implementation).

    ``mu_products[i]`` (1.0 before the first step; torch keeps a float32 0-dim tensor) is
    multiplied by this step's momentum coefficient in place, like ``state_steps[i]`` is
    incremented; see :func:`adam_` for ``capturable`` (which needs ``mu_products`` as tensors
    on the params' devices too).
    """
    _engine.update(NADAM, locals())


# --- RAdam -----------------------------------------------------------------------------------


def _radam_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    # torch._single_tensor_radam (capturable=False), expression for expression; on the device
    # both sides of rho_t > 5 are computed and the kernel picks one per tensor (as torch's
    # capturable RAdam does with torch.where).
    beta2 = h.beta2
    bias_correction1 = 1 - h.beta1**step
    bias_correction2 = 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / bias_correction2
    rectify = rho_t > 5.0
    rect = xp.where(
        rectify,
        lambda: (
            ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        ),
        1.0,
    )
    return {
        "weight_decay": h.weight_decay,
        "lr_decay": 1 - h.lr * h.weight_decay,
        "exp_avg_weight": 1 - h.beta1,
        "beta2": beta2,
        "one_minus_beta2": 1 - beta2,
        "bias_correction1": bias_correction1,
        "bias_correction2_sqrt": bias_correction2**0.5,
        "eps": h.eps,
        "lr": h.lr,
        "rect": rect,
        "rectify": rectify if not xp.on_device else rectify.double(),
    }


RADAM = Spec(
    op="radam_",
    kernel="radam",
    hyper=_ADAM_FAMILY_HYPER,
    state=MOMENTS,
    scalars=_radam_scalars,
    modes=_adam_modes,
    flags=("decoupled_weight_decay", "maximize"),
    counters=("state_steps",),
    step_on_host=True,
    table=("lr_decay", "bias_correction1", "bias_correction2_sqrt", "lr", "rect", "rectify"),
    capturable=True,
)


@traceable(written=written(RADAM))
@_engine.with_options
def radam_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: float | Any = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    **options: Unpack[CapturableOptions],
) -> None:
    """One RAdam step in place (torch.optim.RAdam, for-loop implementation).

    The variance rectification applies when the SMA length rho_t exceeds 5, as in torch; see
    :func:`adam_` for ``state_steps`` and ``capturable`` (with which the rho_t > 5 decision is
    made per tensor on the device too).
    """
    _engine.update(RADAM, locals())


# --- Adagrad ---------------------------------------------------------------------------------


def _adagrad_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    return {
        # A tensor lr divides in its dtype, as torch's for-loop does (float32: clr rounded).
        "clr": xp.lr_div(h.lr, 1 + (step - 1) * h.lr_decay),
        "eps": h.eps,
        "weight_decay": h.weight_decay,
    }


ADAGRAD = Spec(
    op="adagrad_",
    kernel="adagrad",
    hyper=(("lr", NUMBER_OR_TENSOR), "lr_decay", "weight_decay", "eps"),
    # A sum of squares, never negative: 8-bit state takes the unsigned map for it (twice the
    # signed one's resolution), as for exp_avg_sq and square_avg.
    state=(State("state_sums", "sum", signed=False),),
    scalars=_adagrad_scalars,
    counters=("state_steps",),
    step_on_host=True,
)


@traceable(written=written(ADAGRAD))
@_engine.with_options
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
    **options: Unpack[StepOptions],
) -> None:
    """One Adagrad step, in place, following ``torch.optim.Adagrad`` (foreach=False).

    ``state_sums[i]`` is the running sum of squared gradients of ``params[i]`` (torch initialises
    it to ``initial_accumulator_value``); ``state_steps[i]`` is its step count, incremented here
    before the update (a 0-dim tensor, updated in place, or a number, replaced in the list).
    The decayed rate ``lr / (1 + (step - 1) * lr_decay)`` is computed per step value on the
    host, in double (in a tensor ``lr``'s dtype, as torch).
    """
    _engine.update(ADAGRAD, locals())


# --- RMSprop ---------------------------------------------------------------------------------


RMSPROP = Spec(
    op="rmsprop_",
    kernel="rmsprop",
    hyper=("lr", "alpha", "eps", "weight_decay", "momentum"),
    state=(
        State("square_avgs", "square_avg", signed=False),
        State(
            "grad_avgs",
            "grad_avg",
            when=lambda o: bool(o["centered"]),
            missing="centered=True needs grad_avgs, one entry per param",
        ),
        State(
            "momentum_buffer_list",
            "momentum_buffer",
            when=lambda o: o["momentum"] > 0,
            missing="momentum > 0 needs momentum_buffer_list, one entry per param",
        ),
    ),
    scalars=unchanged("lr", "alpha", "eps", "weight_decay", "momentum"),
    modes=lambda h: {"centered": bool(h.centered), "maximize": bool(h.maximize)},
    flags=("centered", "maximize"),
    counters=("state_steps",),
    table=(Negated("lr"),),
    capturable=True,
)


@traceable(written=written(RMSPROP))
@_engine.with_options
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
    **options: Unpack[CapturableOptions],
) -> None:
    """One RMSprop step, in place, following ``torch.optim.RMSprop`` (foreach=False).

    ``grad_avgs`` is needed when ``centered``, ``momentum_buffer_list`` when ``momentum > 0``
    (torch initialises all state to zeros). ``state_steps``, if given, is incremented (the
    update itself does not depend on it).

    ``capturable=True`` (CUDA graphs): no host reads; a tensor ``lr`` is read by the kernel
    on the device, ``state_steps`` (tensors on the params' devices) are advanced there.
    """
    _engine.update(RMSPROP, locals())


# --- Lion ------------------------------------------------------------------------------------


LION = Spec(
    op="lion_",
    kernel="lion",
    hyper=("lr", "beta1", "beta2", "weight_decay"),
    state=(EXP_AVG,),
    scalars=unchanged("lr", "beta1", "beta2", "weight_decay"),
)


@traceable(written=written(LION))
@_engine.with_options
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
    **options: Unpack[StepOptions],
) -> None:
    """One Lion step (Chen et al. 2023), in place, for every ``params[i]``.

    ``c = beta1 * m + (1 - beta1) * g``;  ``p = p * (1 - lr * weight_decay) - lr * sign(c)``;
    ``m = beta2 * m + (1 - beta2) * g``, with ``m = exp_avgs[i]`` (zeros before the first step)
    and ``sign(0) = 0``.
    """
    _engine.update(LION, locals())
