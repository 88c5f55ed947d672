"""Fused in-place Adam-family updates: ``adam_``, ``adamw_``, ``adamax_``, ``nadam_``, ``radam_``.

Each follows torch's for-loop implementation (``torch.optim.<name>``, ``foreach=False``): the
per-parameter ``step`` counters are incremented in place and read on the host, and every
per-step scalar (bias corrections, step sizes, NAdam's ``mu_product``, RAdam's rectification) is
computed here with torch's own Python expressions, in double (or in the hyperparameter
tensor's dtype when ``lr``/``betas`` are tensors, as torch does), then handed to one native call
per (device, dtype, step) group that applies the shared per-element rule
(``src/gradfuse/math/adam.h``).

With ``capturable=True`` (CUDA graphs) nothing is read on the host instead: the counters are
advanced and the same scalars computed on the params' device, one row per tensor of a table
the kernel reads (see ``_capturable``).

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
from gradfuse.functional import _capturable, _steps
from gradfuse.functional._multi_tensor import GradScaling, Group, LowPrecision, group
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


def _float_hyperparams(
    lr: Any, beta1: float, beta2: float, eps: float, weight_decay: float, capturable: bool
) -> tuple[Any, float, float, float, float]:
    """The checked hyperparameters of the Adam-family updates whose betas are numbers:
    ``lr`` as given (a number or 1-element tensor, see :func:`_check_number`), the rest as
    floats; checked in this order."""
    lr = _capturable.check_number(lr, "lr") if capturable else _check_number(lr, "lr")
    return (
        lr,
        to_float(beta1, "beta1"),
        to_float(beta2, "beta2"),
        to_float(eps, "eps"),
        to_float(weight_decay, "weight_decay"),
    )


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
    capturable: bool = False,
) -> tuple[list[Any], GradScaling, int] | None:
    """Validate everything; None when AMP says to skip the step (nothing is written).

    Returns the buffers, the scaling and the number of pointer lists (see
    :class:`LowPrecision`). With ``capturable`` nothing is read on the host: ``found_inf``
    goes to the kernels, which skip the update on the device (see ``_capturable``).
    """
    n = len(slots[0][1])
    if capturable:
        _capturable.check_counters(op, "state_steps", state_steps, slots[0][1], slots[0][0])
        _capturable.check_found_inf(op, found_inf)
    else:
        _steps.check_counters(op, "state_steps", state_steps, n, slots[0][0])
    full = GradScaling(grad_scale, found_inf, clip_coef)
    full.check(op)
    buffers, depth = lowprec.prepare_buffers(op, slots, written)
    if capturable:
        if not lowprec.is_default:
            raise ValueError(
                f"{op}: capturable=True takes neither master_params, kahan_comps, "
                f"rounding='stochastic' nor state of another dtype than the params' (not "
                f"supported yet); use capturable=False for low-precision policies"
            )
        return buffers, full, depth
    if _steps.found_inf_is_set(found_inf):
        return None
    # found_inf is known to be zero: the kernels need only the scale and the clip coefficient.
    return buffers, GradScaling(grad_scale, None, clip_coef), depth


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
    capturable: bool = False,
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

    ``capturable=True`` (torch's option, for CUDA graphs): no host synchronisation. Every
    ``state_steps`` entry must be a 1-element torch tensor on its param's device; it is
    advanced there (``+= 1``, then ``-= found_inf``), the bias corrections and step sizes are
    computed there with tensor ops (``lr`` may be a device tensor, read on the device at every
    step), and ``found_inf`` is read by the kernel. ``beta1`` / ``beta2`` must then be Python
    numbers. Works on CPU tensors too (same results as ``capturable=False``).
    """
    op = "adamw_" if decoupled_weight_decay else "adam_"
    if capturable:
        _adam_capturable(
            op,
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
            decoupled_weight_decay=decoupled_weight_decay,
            grad_scale=grad_scale,
            found_inf=found_inf,
            clip_coef=clip_coef,
            lowprec=LowPrecision(master_params, kahan_comps, rounding, seed),
        )
        return
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


def _adam_capturable(
    op: str,
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    max_exp_avg_sqs: Sequence[Any] | None,
    *,
    state_steps: MutableSequence[Any] | Sequence[Any],
    lr: Any,
    beta1: Any,
    beta2: Any,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Any,
    found_inf: Any,
    clip_coef: Any,
    lowprec: LowPrecision,
) -> None:
    """:func:`adam_` with ``capturable=True``: no host reads (see ``_capturable``)."""
    lr = _capturable.check_number(lr, "lr")
    beta1_f = _capturable.check_host_number(op, beta1, "beta1")
    beta2_f = _capturable.check_host_number(op, beta2, "beta2")
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
    begun = _begin(
        op,
        slots,
        ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
        state_steps,
        grad_scale,
        found_inf,
        clip_coef,
        lowprec,
        capturable=True,
    )
    assert begun is not None
    buffers, scaling, _ = begun
    _capturable.advance(state_steps, found_inf)
    core = _native.core()
    for g in group(buffers, len(slots), len(params)):
        step = _capturable.step_values(state_steps, g)
        # The host path's expressions (torch._single_tensor_adam), on the device, per tensor.
        bias_correction1 = 1 - beta1_f**step
        bias_correction2 = 1 - beta2_f**step
        step_size = _capturable.lr_div(lr, bias_correction1)
        bias_correction2_sqrt = bias_correction2**0.5
        lr_decay = 1 - lr * wd_f
        table, table_ptr, stride = _capturable.build_table(
            g, step, [lr_decay, bias_correction2_sqrt, -step_size]
        )
        core.adam(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=wd_f,
            lr_decay=1.0,  # per tensor, from the table
            exp_avg_weight=1 - beta1_f,
            beta2=beta2_f,
            one_minus_beta2=1 - beta2_f,
            bias_correction2_sqrt=1.0,  # per tensor, from the table
            neg_step_size=0.0,  # per tensor, from the table
            eps=eps_f,
            weight_decay_mode=_wd_mode(wd_f, decoupled_weight_decay),
            amsgrad=bool(amsgrad),
            maximize=bool(maximize),
            step_table=table_ptr,
            step_table_stride=stride,
            **_scaling_kwargs(scaling, g),
        )
        del table  # kept alive until the kernel has been launched (stream-ordered on CUDA)


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
    capturable: bool = False,
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
        capturable=capturable,
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
    capturable: bool = False,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One Adamax step in place (torch.optim.Adamax, for-loop implementation).

    ``exp_infs`` is the exponentially weighted infinity norm; see :func:`adam_` for
    ``state_steps``, the AMP/clipping arguments and ``capturable``.
    """
    lr, beta1_f, beta2_f, eps_f, wd_f = _float_hyperparams(
        lr, beta1, beta2, eps, weight_decay, capturable
    )
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
        capturable,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    n = len(params)
    core = _native.core()
    if capturable:
        _capturable.advance(state_steps, found_inf)
        for g in group(buffers, len(slots), n):
            step_t = _capturable.step_values(state_steps, g)
            table, table_ptr, stride = _capturable.build_table(
                g, step_t, [-_capturable.lr_div(lr, 1 - beta1_f**step_t)]
            )
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
                neg_clr=0.0,  # per tensor, from the table
                maximize=bool(maximize),
                step_table=table_ptr,
                step_table_stride=stride,
                **_scaling_kwargs(scaling, g),
            )
            del table
        return
    steps = _steps.increment_all(state_steps)
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
    capturable: bool = False,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One NAdam step in place (torch.optim.NAdam, for-loop implementation).

    ``mu_products[i]`` (1.0 before the first step; torch keeps a float32 0-dim tensor) is
    multiplied by this step's momentum coefficient in place, like ``state_steps[i]`` is
    incremented; see :func:`adam_` for the AMP/clipping arguments and ``capturable`` (which
    needs ``mu_products`` as tensors on the params' devices too).
    """
    lr, beta1_f, beta2_f, eps_f, wd_f = _float_hyperparams(
        lr, beta1, beta2, eps, weight_decay, capturable
    )
    md_f = to_float(momentum_decay, "momentum_decay")
    slots: list[tuple[str, Sequence[Any]]] = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
    ]
    n = len(params)
    if capturable:
        _capturable.check_counters("nadam_", "mu_products", mu_products, params)
    else:
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
        capturable,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    if capturable:
        _nadam_capturable(
            buffers,
            scaling,
            len(slots),
            mu_products,
            state_steps=state_steps,
            lr=lr,
            beta1=beta1_f,
            beta2=beta2_f,
            eps=eps_f,
            weight_decay=wd_f,
            momentum_decay=md_f,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            found_inf=found_inf,
        )
        return
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


def _nadam_capturable(
    buffers: list[Any],
    scaling: GradScaling,
    depth: int,
    mu_products: Sequence[Any],
    *,
    state_steps: Sequence[Any],
    lr: Any,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    found_inf: Any,
) -> None:
    """:func:`nadam_` with ``capturable=True``, after validation (see ``_capturable``)."""
    import torch

    _capturable.advance(state_steps, found_inf)
    core = _native.core()
    for g in group(buffers, depth, len(mu_products)):
        step = _capturable.step_values(state_steps, g)
        # torch._single_tensor_nadam's expressions, per tensor, in double.
        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        # mu_product *= mu in the counters' own dtype (torch keeps float32), as the host path
        # does; by 1 instead when AMP skips the step, so the product stays as it was.
        products = [mu_products[i] for i in g.indices]
        factor = mu
        if found_inf is not None:
            skipped = found_inf.reshape(()).to(step.device) != 0
            factor = torch.where(skipped, torch.ones_like(mu), mu)
        torch._foreach_mul_(
            products, [f.to(p.dtype) for f, p in zip(factor.unbind(0), products, strict=True)]
        )
        mu_product = torch.stack([p.reshape(()) for p in products]).to(torch.float64)
        bias_correction2 = 1 - beta2**step
        mu_product_next = mu_product * mu_next
        # With a tensor lr the host path computes the lr products in lr's dtype (torch casts
        # the Python numbers to it): so does this one (lr_cast), for the same values.
        lr_cast = _capturable.lr_cast
        table, table_ptr, stride = _capturable.build_table(
            g,
            step,
            [
                1 - lr * weight_decay,
                bias_correction2,
                -lr * lr_cast(1.0 - mu, lr) / lr_cast(1.0 - mu_product, lr),
                (-lr * lr_cast(mu_next, lr)) / lr_cast(1.0 - mu_product_next, lr),
            ],
        )
        core.nadam(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            weight_decay=weight_decay,
            lr_decay=1.0,  # per tensor, from the table (and the three below)
            exp_avg_weight=1 - beta1,
            beta2=beta2,
            one_minus_beta2=1 - beta2,
            bias_correction2=1.0,
            eps=eps,
            grad_coef=0.0,
            exp_avg_coef=0.0,
            weight_decay_mode=_wd_mode(weight_decay, decoupled_weight_decay),
            maximize=bool(maximize),
            step_table=table_ptr,
            step_table_stride=stride,
            **_scaling_kwargs(scaling, g),
        )
        del table


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
    capturable: bool = False,
    master_params: Sequence[Any] | None = None,
    kahan_comps: Sequence[Any] | None = None,
    rounding: str = "nearest",
    seed: int | None = None,
) -> None:
    """One RAdam step in place (torch.optim.RAdam, for-loop implementation).

    The variance rectification applies when the SMA length rho_t exceeds 5, as in torch; see
    :func:`adam_` for ``state_steps``, the AMP/clipping arguments and ``capturable`` (with
    which the rho_t > 5 decision is made per tensor on the device too).
    """
    lr, beta1_f, beta2_f, eps_f, wd_f = _float_hyperparams(
        lr, beta1, beta2, eps, weight_decay, capturable
    )
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
        capturable,
    )
    if begun is None:
        return
    buffers, scaling, depth = begun
    n = len(params)
    core = _native.core()
    if capturable:
        import torch

        _capturable.advance(state_steps, found_inf)
        for g in group(buffers, len(slots), n):
            step_t = _capturable.step_values(state_steps, g)
            # The host path's expressions below, per tensor; both sides of rho_t > 5 are
            # computed and the kernel picks one per tensor (torch's capturable RAdam does the
            # same with torch.where).
            bc1 = 1 - beta1_f**step_t
            bc2 = 1 - beta2_f**step_t
            rho_inf = 2 / (1 - beta2_f) - 1
            rho_t = rho_inf - 2 * step_t * (beta2_f**step_t) / bc2
            rectify_t = rho_t > 5.0
            rect_t = torch.where(
                rectify_t,
                ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
                ** 0.5,
                torch.ones_like(rho_t),
            )
            table, table_ptr, stride = _capturable.build_table(
                g,
                step_t,
                [1 - lr * wd_f, bc1, bc2**0.5, lr, rect_t, rectify_t.to(torch.float64)],
            )
            core.radam(
                g.slots,
                g.numels,
                g.dtype_code,
                g.device,
                g.stream,
                weight_decay=wd_f,
                lr_decay=1.0,  # per tensor, from the table (with the five below)
                exp_avg_weight=1 - beta1_f,
                beta2=beta2_f,
                one_minus_beta2=1 - beta2_f,
                bias_correction1=1.0,
                bias_correction2_sqrt=1.0,
                eps=eps_f,
                lr=0.0,
                rect=1.0,
                weight_decay_mode=_wd_mode(wd_f, decoupled_weight_decay),
                maximize=bool(maximize),
                rectify=False,
                step_table=table_ptr,
                step_table_stride=stride,
                **_scaling_kwargs(scaling, g),
            )
            del table
        return
    steps = _steps.increment_all(state_steps)
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
