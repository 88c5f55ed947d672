"""Fused in-place Adam-family updates: ``adam_``, ``adamw_``, ``adamax_``, ``nadam_``, ``radam_``.

Each follows torch's for-loop implementation (``torch.optim.<name>``, ``foreach=False``): the
per-parameter ``step`` counters are incremented in place and read on the host, and every
per-step scalar (bias corrections, step sizes, NAdam's ``mu_product``, RAdam's rectification) is
computed here with torch's own Python expressions, in double (or in the hyperparameter
tensor's dtype when ``lr``/``betas`` are tensors, as torch does), then handed to one native call
per (device, dtype, step) group that applies the shared per-element rule
(``src/gradfuse/math/adam.h``).

Every argument is checked before anything is written: a call that raises leaves every array
and counter as it was. With AMP, a nonzero ``found_inf`` makes the call change nothing at all,
counters included (the value is read on the host; see ``_steps.found_inf_is_set``).

Every function also takes the low-precision keywords (off by default; see
:class:`gradfuse.functional._multi_tensor.LowPrecision`): ``master_params``, ``kahan_comps``,
``rounding`` and ``seed``; state lists may be float32 for float16/bfloat16 params, or
bfloat16 for float32 params.
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

from gradfuse import _native
from gradfuse._compile import traceable
from gradfuse.functional import _steps
from gradfuse.functional._multi_tensor import GradScaling, Group, LowPrecision, group, prepare
from gradfuse.functional._optim import to_float

# Weight decay modes of the native rules (gf::math::WeightDecayMode).
_WD_NONE, _WD_L2, _WD_DECOUPLED = 0, 1, 2

_SCALING_NAMES = ("grad_scale", "found_inf", "clip_coef")


def _check_number(value: Any, name: str) -> Any:
    """Validate a hyperparameter (a number or a 1-element tensor) and return it unchanged, so
    the per-step expressions below see exactly what torch's would."""
    to_float(value, name)
    if hasattr(value, "numel") and hasattr(value, "squeeze"):
        return value.squeeze()  # torch's _to_scalar: a 1-element tensor becomes 0-dim
    return value


def _wd_mode(weight_decay: float, decoupled: bool) -> int:
    if weight_decay == 0.0:
        return _WD_NONE
    return _WD_DECOUPLED if decoupled else _WD_L2


def _begin(
    op: str,
    slots: list[tuple[str, Sequence[Any]]],
    written: tuple[str, ...],
    state_steps: Sequence[Any],
    grad_scale: Any,
    found_inf: Any,
    clip_coef: Any,
    lowprec: LowPrecision,
) -> tuple[list[Any], GradScaling, int] | None:
    """Validate everything; None when AMP says to skip the step (nothing is written).

    Returns the buffers, the scaling, the number of pointer lists and the state slot (see
    :class:`LowPrecision`)."""
    n = len(slots[0][1])
    _steps.check_counters(op, "state_steps", state_steps, n, slots[0][0])
    full = GradScaling(grad_scale, found_inf, clip_coef)
    full.check(op)
    slots, free = lowprec.extend(op, slots)
    buffers = prepare(
        op,
        slots,
        written=(*written, *lowprec.written),
        free_dtype=free,
        mismatches=lowprec.mismatches,
    )
    lowprec.check(op, buffers, n)
    if _steps.found_inf_is_set(found_inf):
        return None
    # found_inf is known to be zero: the kernels need only the scale and the clip coefficient.
    return buffers, GradScaling(grad_scale, None, clip_coef), len(slots)


def _scaling_kwargs(scaling: GradScaling, g: Group) -> dict[str, int]:
    return dict(zip(_SCALING_NAMES, scaling.pointers(g.device), strict=True))


def _torch_dtype(g: Group) -> Any:
    import torch

    from gradfuse._buffers import DTYPE_CODES

    name = next(k for k, v in DTYPE_CODES.items() if v == g.dtype_code)
    return getattr(torch, name)


@traceable(
    written=(
        "master_params",
        "kahan_comps",
        "params",
        "exp_avgs",
        "exp_avg_sqs",
        "max_exp_avg_sqs",
        "state_steps",
    )
)
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
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One Adam step (AdamW with ``decoupled_weight_decay=True``), in place.

    Follows ``torch.optim.Adam`` (for-loop implementation): ``state_steps[i]`` is incremented
    and its new value gives the bias corrections; ``exp_avgs``, ``exp_avg_sqs`` and, with
    ``amsgrad``, ``max_exp_avg_sqs`` are updated in place (zeros on the first step, as torch
    initialises them). ``lr``, ``beta1`` and ``beta2`` may be 1-element tensors.

    ``grad_scale`` / ``found_inf`` (torch.amp.GradScaler's scale and verdict) and ``clip_coef``
    (a global-norm clipping factor, at most 1) are optional 1-element float32 tensors: grads
    are divided by ``grad_scale`` and multiplied by ``clip_coef`` inside the update; a nonzero
    ``found_inf`` makes the call change nothing (params, state and ``state_steps``).
    """
    op = "adamw_" if decoupled_weight_decay else "adam_"
    lr = _check_number(lr, "lr")
    beta1 = _check_number(beta1, "beta1")
    beta2 = _check_number(beta2, "beta2")
    eps_f = to_float(eps, "eps")
    wd_f = to_float(weight_decay, "weight_decay")
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
    ]
    if amsgrad:
        if max_exp_avg_sqs is None:
            raise ValueError(f"{op}: amsgrad=True needs max_exp_avg_sqs, one per param")
        slots.append(("max_exp_avg_sqs", max_exp_avg_sqs))
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    begun = _begin(
        op,
        slots,
        ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
        state_steps,
        grad_scale,
        found_inf,
        clip_coef,
        lowprec,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    n = len(params)
    steps = _steps.increment_all(state_steps)
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, steps, *lowprec.layout)):
        step = steps[g.indices[0]]
        # torch._single_tensor_adam (capturable=False), expression for expression.
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        device_beta1 = beta1
        if hasattr(beta1, "to"):  # a tensor beta1 is cast to the param dtype for the lerp
            device_beta1 = beta1.to(dtype=_torch_dtype(g))
        core.adam(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=wd_f,
            lr_decay=float(1 - lr * wd_f),
            exp_avg_weight=float(1 - device_beta1),
            beta2=float(beta2),
            one_minus_beta2=float(1 - beta2),
            bias_correction2_sqrt=float(bias_correction2_sqrt),
            neg_step_size=float(-step_size),
            eps=eps_f,
            weight_decay_mode=_wd_mode(wd_f, decoupled_weight_decay),
            amsgrad=bool(amsgrad),
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g),
            **lowprec.kwargs(g, k),
        )


@traceable(
    written=(
        "master_params",
        "kahan_comps",
        "params",
        "exp_avgs",
        "exp_avg_sqs",
        "max_exp_avg_sqs",
        "state_steps",
    )
)
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
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One AdamW step in place: :func:`adam_` with decoupled weight decay (torch.optim.AdamW)."""
    adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps=state_steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        grad_scale=grad_scale,
        found_inf=found_inf,
        clip_coef=clip_coef,
        master_params=master_params,
        kahan_comps=kahan_comps,
        rounding=rounding,
        seed=seed,
    )


@traceable(
    written=("master_params", "kahan_comps", "params", "exp_avgs", "exp_infs", "state_steps")
)
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
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One Adamax step in place (torch.optim.Adamax, for-loop implementation).

    ``exp_infs`` is the exponentially weighted infinity norm; see :func:`adam_` for
    ``state_steps`` and the AMP/clipping arguments.
    """
    lr = _check_number(lr, "lr")
    beta1_f = to_float(beta1, "beta1")
    beta2_f = to_float(beta2, "beta2")
    eps_f = to_float(eps, "eps")
    wd_f = to_float(weight_decay, "weight_decay")
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_infs", exp_infs),
    ]
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    begun = _begin(
        "adamax_",
        slots,
        ("params", "exp_avgs", "exp_infs"),
        state_steps,
        grad_scale,
        found_inf,
        clip_coef,
        lowprec,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    n = len(params)
    steps = _steps.increment_all(state_steps)
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, steps, *lowprec.layout)):
        step = steps[g.indices[0]]
        # torch._single_tensor_adamax (capturable=False).
        bias_correction = 1 - beta1_f**step
        clr = lr / bias_correction
        core.adamax(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=wd_f,
            exp_avg_weight=1 - beta1_f,
            beta2=beta2_f,
            eps=eps_f,
            neg_clr=float(-clr),
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g),
            **lowprec.kwargs(g, k),
        )


@traceable(
    written=(
        "master_params",
        "kahan_comps",
        "params",
        "exp_avgs",
        "exp_avg_sqs",
        "mu_products",
        "state_steps",
    )
)
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
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One NAdam step in place (torch.optim.NAdam, for-loop implementation).

    ``mu_products[i]`` (1.0 before the first step; torch keeps a float32 0-dim tensor) is
    multiplied by this step's momentum coefficient in place, like ``state_steps[i]`` is
    incremented; see :func:`adam_` for the AMP/clipping arguments.
    """
    lr = _check_number(lr, "lr")
    beta1_f = to_float(beta1, "beta1")
    beta2_f = to_float(beta2, "beta2")
    eps_f = to_float(eps, "eps")
    wd_f = to_float(weight_decay, "weight_decay")
    md_f = to_float(momentum_decay, "momentum_decay")
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
    ]
    n = len(params)
    _steps.check_counters("nadam_", "mu_products", mu_products, n, "params")
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    begun = _begin(
        "nadam_",
        slots,
        ("params", "exp_avgs", "exp_avg_sqs"),
        state_steps,
        grad_scale,
        found_inf,
        clip_coef,
        lowprec,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    keys: list[tuple[float, float, float, float]] = []
    for i in range(n):
        # torch._single_tensor_nadam (capturable=False), expression for expression.
        step = _steps.increment(state_steps, i)
        mu = beta1_f * (1.0 - 0.5 * (0.96 ** (step * md_f)))
        mu_next = beta1_f * (1.0 - 0.5 * (0.96 ** ((step + 1) * md_f)))
        mu_product = _steps.multiply(mu_products, i, mu)
        keys.append((step, mu, mu_next, mu_product))
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, keys, *lowprec.layout)):
        step, mu, mu_next, mu_product = keys[g.indices[0]]
        bias_correction2 = 1 - beta2_f**step
        mu_product_next = mu_product * mu_next
        core.nadam(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=wd_f,
            lr_decay=float(1 - lr * wd_f),
            exp_avg_weight=1 - beta1_f,
            beta2=beta2_f,
            one_minus_beta2=1 - beta2_f,
            bias_correction2=bias_correction2,
            eps=eps_f,
            grad_coef=float(-lr * (1.0 - mu) / (1.0 - mu_product)),
            exp_avg_coef=float((-lr * mu_next) / (1.0 - mu_product_next)),
            weight_decay_mode=_wd_mode(wd_f, decoupled_weight_decay),
            maximize=bool(maximize),
            **_scaling_kwargs(scaling, g),
            **lowprec.kwargs(g, k),
        )


@traceable(
    written=("master_params", "kahan_comps", "params", "exp_avgs", "exp_avg_sqs", "state_steps")
)
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
    grad_scale: Any = None,
    found_inf: Any = None,
    clip_coef: Any = None,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One RAdam step in place (torch.optim.RAdam, for-loop implementation).

    The variance rectification applies when the SMA length rho_t exceeds 5, as in torch; see
    :func:`adam_` for ``state_steps`` and the AMP/clipping arguments.
    """
    lr = _check_number(lr, "lr")
    beta1_f = to_float(beta1, "beta1")
    beta2_f = to_float(beta2, "beta2")
    eps_f = to_float(eps, "eps")
    wd_f = to_float(weight_decay, "weight_decay")
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
    ]
    lowprec = LowPrecision(master_params, kahan_comps, rounding, seed)
    begun = _begin(
        "radam_",
        slots,
        ("params", "exp_avgs", "exp_avg_sqs"),
        state_steps,
        grad_scale,
        found_inf,
        clip_coef,
        lowprec,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    n = len(params)
    steps = _steps.increment_all(state_steps)
    core = _native.core()
    for k, g in enumerate(group(buffers, depth, n, steps, *lowprec.layout)):
        step = steps[g.indices[0]]
        # torch._single_tensor_radam (capturable=False), expression for expression.
        bias_correction1 = 1 - beta1_f**step
        bias_correction2 = 1 - beta2_f**step
        rho_inf = 2 / (1 - beta2_f) - 1
        rho_t = rho_inf - 2 * step * (beta2_f**step) / bias_correction2
        rectify = rho_t > 5.0
        rect = (
            ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
            if rectify
            else 1.0
        )
        core.radam(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=wd_f,
            lr_decay=float(1 - lr * wd_f),
            exp_avg_weight=1 - beta1_f,
            beta2=beta2_f,
            one_minus_beta2=1 - beta2_f,
            bias_correction1=bias_correction1,
            bias_correction2_sqrt=bias_correction2**0.5,
            eps=eps_f,
            lr=float(lr),
            rect=float(rect),
            weight_decay_mode=_wd_mode(wd_f, decoupled_weight_decay),
            maximize=bool(maximize),
            rectify=bool(rectify),
            **_scaling_kwargs(scaling, g),
            **lowprec.kwargs(g, k),
        )
