"""Updates that reduce per tensor before they write: LAMB and Adafactor.

Each is a :class:`~gradfuse.functional._engine.Spec` (state lists, hyperparameters, the native
call's scalars from torch's or apex's Python expressions, its mode flags) like every other
update, but not driven by :func:`_engine.run`, for two reasons the engine's single elementwise
call per group cannot express:

- the native kernel runs several passes with per-tensor reductions between them (LAMB: the
  norms of the param and of the update for the trust ratio; Adafactor: RMS of the param, the row
  and column means of ``grad**2``, RMS of the update), so it is its own kernel
  (``src/cpu/kernels/lamb.cpp``, ``adafactor.cpp``), not a rule over ``map_elements``;
- LAMB counts steps per param group (apex's and pytorch-optimizer's ``group["step"]``), and
  Adafactor's factored state (``row_var``, ``col_var``) is not the params' shape, so the
  engine's slot checks (every slot shaped as the param) do not apply.

:func:`lamb_` and :func:`adafactor_` drive their calls in the engine's order (:func:`_call` makes
each native call from the spec): check every argument, read AMP's
verdict on the host (the scalars need the step), advance the counters, group by (device, dtype,
step[, factored]) and make one native call per group. :func:`lamb_` takes the engine's
low-precision options (``master_params``, ``kahan_comps``, ``rounding``/``seed``, state of
another dtype, 8-bit state with ``state_absmax``), checked and grouped by the engine's
:class:`~gradfuse.functional._multi_tensor.LowPrecision` (CPU and CUDA). :func:`adafactor_` takes
the same policies but 8-bit state (master weights, Kahan, stochastic rounding, a state dtype for
its row/column factors and unfactored variance).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Unpack

from gradfuse import _buffers, _native
from gradfuse._compile import traceable
from gradfuse._options import check_options, option_names
from gradfuse.functional import _engine, _steps
from gradfuse.functional._engine import (
    MOMENTS,
    NUMBER_OR_TENSOR,
    HostMath,
    Hyper,
    Spec,
    State,
    StepOptions,
)
from gradfuse.functional._multi_tensor import GradScaling, Group, LowPrecision, group

# --- LAMB ------------------------------------------------------------------------------------


def _lamb_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    """math::LambHyper's fields (apex's multi_tensor_lamb_cuda)."""
    bc1 = 1.0 - h.beta1**step if h.bias_correction else 1.0
    bc2 = 1.0 - h.beta2**step if h.bias_correction else 1.0
    return {
        "beta1": h.beta1,
        "beta2": h.beta2,
        "beta3": 1.0 - h.beta1 if h.grad_averaging else 1.0,
        "eps": h.eps,
        "weight_decay": h.weight_decay,
        "bias_correction1": bc1,
        "bias_correction2": bc2,
        "lr": h.lr,
    }


def _lamb_modes(h: Hyper) -> dict[str, Any]:
    """LambArgs' flags: apex applies the trust ratio only where weight_decay != 0, unless
    use_nvlamb."""
    return {
        "decoupled": bool(h.adam_w_mode),
        "trust": bool(h.use_nvlamb) or h.weight_decay != 0.0,
        "maximize": bool(h.maximize),
    }


LAMB = Spec(
    op="lamb_",
    kernel="lamb",
    hyper=("lr", "beta1", "beta2", "eps", "weight_decay"),
    state=MOMENTS,
    scalars=_lamb_scalars,
    modes=_lamb_modes,
    flags=("bias_correction", "grad_averaging", "adam_w_mode", "use_nvlamb", "maximize"),
    step_on_host=True,
)


@traceable(written=_engine.written(LAMB))
@_engine.with_options
def lamb_(
    params: Sequence[Any],
    grads: Sequence[Any],
    exp_avgs: Sequence[Any],
    exp_avg_sqs: Sequence[Any],
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-6,
    weight_decay: float = 0.01,
    bias_correction: bool = True,
    grad_averaging: bool = True,
    adam_w_mode: bool = True,
    use_nvlamb: bool = False,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> None:
    """One LAMB step (You et al. 2019) with apex ``FusedLAMB``'s semantics, in place.

    ``step`` is the number of this step (1 on the first; apex and pytorch-optimizer keep it per
    param group). Per element, with ``g`` the gradient (divided by ``grad_scale``, times
    ``clip_coef``, negated under ``maximize``)::

        g = g + weight_decay * p                    (adam_w_mode=False only)
        m = beta1 * m + beta3 * g                   (beta3 = 1 - beta1 if grad_averaging else 1)
        v = beta2 * v + (1 - beta2) * g * g
        u = (m / bc1) / (sqrt(v / bc2) + eps)       (bc = 1 - beta**step, 1 without correction)
        u = u + weight_decay * p                    (adam_w_mode=True only)

    and per tensor ``p -= ratio * u`` with ``ratio = lr * ||p|| / ||u||`` where the trust ratio
    applies (``weight_decay != 0`` or ``use_nvlamb``) and both norms are nonzero, else ``lr``.
    apex's global gradient clipping is the caller's ``clip_coef`` (:class:`gradfuse.optim.LAMB`
    computes it). AMP and the low-precision options (master copies, Kahan compensation,
    stochastic rounding, bfloat16/float32 or 8-bit state with ``state_absmax``; CPU and CUDA)
    as for every update (:mod:`gradfuse.functional._updates`); the norms are those of the param
    the update computes with (the master copy) and of ``u`` from the moments as stored.
    """
    check_options(LAMB.op, options, _STEP_OPTIONS)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"lamb_: step must be an int >= 1 (this step's number), got {step!r}")
    h = _engine.hyper_of(LAMB, locals())
    _buffers.refuse_sharded(LAMB.op, params, "the trust ratio takes its norms")
    slots = [
        ("params", params),
        ("grads", grads),
        ("exp_avgs", exp_avgs),
        ("exp_avg_sqs", exp_avg_sqs),
    ]
    _check_none(LAMB.op, slots[2:])
    lowprec = _engine.lowprec_of(options)
    lowprec.signed = [st.signed for st in LAMB.state]
    buffers, depth = lowprec.prepare_buffers(LAMB.op, slots, ("params", "exp_avgs", "exp_avg_sqs"))
    n = len(params)
    scaling = _scaling(LAMB.op, options)
    if scaling is None:
        return
    for k, g in enumerate(group(buffers, depth, n, None, *lowprec.layout)):
        g.slots.extend(lowprec.absmax_slots(g))  # 8-bit state: the absmax lists last
        _call(LAMB, h, g, float(step), scaling, **lowprec.kwargs(g, k))


_STEP_OPTIONS = option_names(StepOptions)


# --- Adafactor -------------------------------------------------------------------------------


def _adafactor_scalars(h: Hyper, xp: Any, step: Any, counters: dict[str, Any]) -> dict[str, Any]:
    """math::AdafactorHyper's fields, from torch's expressions (_single_tensor_adafactor)."""
    lr = h.lr
    return {
        "one_minus_beta2": step**h.beta2_decay,
        "rho": min(lr, 1 / (step**0.5)),
        "eps1": h.eps1,
        "eps2": h.eps2,
        "d": h.d,
        "decay": 1 - lr * h.weight_decay,
    }


ADAFACTOR = Spec(
    op="adafactor_",
    kernel="adafactor",
    hyper=(("lr", NUMBER_OR_TENSOR), "beta2_decay", "eps2", "d", "weight_decay"),
    state=(
        State("row_vars", "row_var"),
        State("col_vars", "col_var"),
        State("variances", "variance"),
    ),
    scalars=_adafactor_scalars,
    counters=("state_steps",),
    step_on_host=True,
)


@traceable(written=_engine.written(ADAFACTOR))
@_engine.with_options
def adafactor_(
    params: Sequence[Any],
    grads: Sequence[Any],
    row_vars: Sequence[Any],
    col_vars: Sequence[Any],
    variances: Sequence[Any],
    state_steps: Sequence[Any],
    *,
    d: float = 1.0,
    lr: float | Any = 1e-2,
    beta2_decay: float = -0.8,
    weight_decay: float = 0.0,
    eps1: float | None = None,
    eps2: float = 1e-3,
    maximize: bool = False,
    **options: Unpack[StepOptions],
) -> None:
    """One Adafactor step, in place, as ``torch.optim.adafactor`` computes it (its argument
    names and lists: ``row_vars[i]``/``col_vars[i]`` for params of rank >= 2, ``variances[i]``
    for the others, None where absent; ``state_steps[i]`` is incremented).

    Per tensor at step ``t``: ``alpha = max(eps2, RMS(p)) * min(lr, t**-0.5)``;
    ``p *= 1 - lr * weight_decay``; the second moment ``v`` is the factored estimate
    ``row_var @ col_var / max(mean(row_var), eps1)`` (row and column means of ``g**2`` averaged
    with weight ``t**beta2_decay``) or the unfactored ``variance``;
    ``u = g / sqrt(max(v, eps1**2))``; ``p -= alpha / max(1, RMS(u) / d) * u``.
    ``eps1=None`` is the machine epsilon of the first param's dtype (as torch). Params of rank
    >= 2 must be contiguous. An empty param only advances its step (torch divides by its zero
    size there).

    Precision policies (as every update's, :class:`~._multi_tensor.LowPrecision`):
    ``master_params`` (float32 copies of float16/bfloat16 params, read and updated instead of
    them, RMS(p) included; ``eps1=None`` is then float32's machine epsilon, the dtype the update
    runs in), ``kahan_comps`` or ``rounding="stochastic"`` with ``seed`` (bfloat16 params), and
    the state (``row_vars``/``col_vars``, ``variances``) in float32 for float16/bfloat16 params
    or bfloat16 for float32 params. No 8-bit state (``state_absmax``, uint8 ``variances``: a
    ValueError that says so, nothing written): the factored state is already O(rows + cols)
    per matrix.
    """
    op = ADAFACTOR.op
    check_options(op, options, _STEP_OPTIONS)
    if options.get("state_absmax") is not None:
        raise ValueError(f"{op}: state_absmax is for 8-bit state; {_NO_8BIT}")
    h = _engine.hyper_of(ADAFACTOR, locals())
    _buffers.refuse_sharded(
        op, params, "its step takes the RMS, and a matrix its row and column means"
    )
    n = len(params)
    lists = {"grads": grads, "row_vars": row_vars, "col_vars": col_vars, "variances": variances}
    for name, values in (*lists.items(), ("state_steps", state_steps)):
        if len(values) != n:
            raise ValueError(
                f"{op}: expected one entry of {name} per entry of params, got {len(values)} "
                f"{name} for {n} params"
            )
    _steps.check_counters(op, "state_steps", state_steps, n, "params")
    factored = [_rank(params[i], op, i) >= 2 for i in range(n)]
    for i in range(n):
        need = ("row_vars", "col_vars") if factored[i] else ("variances",)
        for name in need:
            if lists[name][i] is None:
                rank = "rank >= 2" if factored[i] else "rank < 2"
                raise ValueError(
                    f"{op}: {name}[{i}] is None, but params[{i}] has {rank} and needs it "
                    f"(initialise the state as torch.optim.Adafactor does)"
                )
    flat = [i for i in range(n) if not factored[i]]
    fact = [i for i in range(n) if factored[i]]
    for i in flat:  # 8-bit codes: say why Adafactor has none
        if str(getattr(variances[i], "dtype", "")).endswith("uint8"):
            raise ValueError(f"{op}: variances[{i}] holds uint8 codes; {_NO_8BIT}")
    master_params, kahan_comps = options.get("master_params"), options.get("kahan_comps")
    # The policy's extra list (master copies, Kahan compensations) joins each part's slots.
    for name, extra in (("master_params", master_params), ("kahan_comps", kahan_comps)):
        if extra is not None and len(extra) != n:
            raise ValueError(
                f"{op}: expected one entry of {name} per entry of params, got {len(extra)} "
                f"{name} for {n} params"
            )
    flat_lp, fact_lp = (
        LowPrecision(
            None if master_params is None else pick(master_params, idx),
            None if kahan_comps is None else pick(kahan_comps, idx),
            options.get("rounding", "nearest"),
            options.get("seed"),
            index=idx,  # messages name the caller's params[i], not the part's
        )
        for idx in (flat, fact)
    )
    flat_bufs, flat_depth = flat_lp.prepare_buffers(
        op,
        [
            ("params", pick(params, flat)),
            ("grads", pick(grads, flat)),
            ("variances", pick(variances, flat)),
        ],
        ("params", "variances"),
    )
    fact_bufs, fact_depth = fact_lp.prepare_buffers(
        op, [("params", pick(params, fact)), ("grads", pick(grads, fact))], ("params",)
    )
    shapes = _factored_state(op, fact, fact_bufs, row_vars, col_vars)
    every = [*flat_bufs, *fact_bufs, *shapes.buffers]
    # No written buffer (all but the gradients) may share memory with another of the call.
    nf, nc = len(flat), len(fact)
    grads_at = (range(nf, 2 * nf), range(flat_depth * nf + nc, flat_depth * nf + 2 * nc))
    clash = _buffers.find_overlap(every, lambda k: not any(k in r for r in grads_at))
    if clash is not None:
        extra = ("master_params",) if master_params is not None else ()
        extra = ("kahan_comps",) if kahan_comps is not None else extra
        _buffers.raise_overlap(*(_buffer_name(op, k, flat, fact, extra) for k in clash))
    scaling = _scaling(op, options)
    if scaling is None:
        return
    if n and eps1 is None:
        # The dtype the update runs in: the param's, or its float32 master copy's.
        master = None if master_params is None else master_params[0]
        eps1 = _machine_eps(params[0] if master is None else master)
    h.__dict__["eps1"] = _engine.to_float(eps1 if eps1 is not None else 0.0, "eps1")
    steps = _steps.increment_all(state_steps) if n else []
    salt = 0  # the native calls' ordinal: each draws its own stochastic-rounding bits
    if flat:
        keys = [steps[i] for i in flat]
        for g in group(flat_bufs, flat_depth, nf, keys, *flat_lp.layout):
            precision = flat_lp.kwargs(g, salt)
            salt += 1
            _call(ADAFACTOR, h, g, keys[g.indices[0]], scaling, rows=[], cols=[], **precision)
    if fact:
        # Grouped by step and by the row/col state's dtype code (-1: the params').
        fact_keys = [(steps[i], shapes.state_codes[k]) for k, i in enumerate(fact)]
        row_ptrs, col_ptrs = shapes.row_ptrs, shapes.col_ptrs
        for g in group(fact_bufs, fact_depth, nc, fact_keys, *fact_lp.layout):
            g.slots[2:2] = [[row_ptrs[k] for k in g.indices], [col_ptrs[k] for k in g.indices]]
            rows = [shapes.rows[k] for k in g.indices]
            cols = [shapes.cols[k] for k in g.indices]
            step, state_code = fact_keys[g.indices[0]]
            precision = fact_lp.kwargs(g, salt)
            precision["state_dtype"] = state_code
            salt += 1
            _call(ADAFACTOR, h, g, step, scaling, rows=rows, cols=cols, **precision)


_NO_8BIT = (
    "Adafactor has no 8-bit state: its factored state is already O(rows + cols) per matrix, "
    "and the full variance of the other params (vectors) is a small share of the memory"
)


class _Factored:
    """The row/col state of the factored params: buffers and matrix shapes, in call order."""

    def __init__(self) -> None:
        self.buffers: list[Any] = []  # row_vars[i], col_vars[i] of each factored param i
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.state_codes: list[int] = []  # dtype code of row/col, -1 where it is the param's

    @property
    def row_ptrs(self) -> list[int]:
        return [b.ptr for b in self.buffers[0::2]]

    @property
    def col_ptrs(self) -> list[int]:
        return [b.ptr for b in self.buffers[1::2]]


def _factored_state(
    op: str,
    idx: list[int],
    bufs: Sequence[Any],
    row_vars: Sequence[Any],
    col_vars: Sequence[Any],
) -> _Factored:
    """Checks row_var/col_var of every factored param: torch's shapes (the param's with the last
    or the second-to-last dim 1), the param's device, contiguous and writable, both of one dtype:
    the param's, or float32 for float16/bfloat16 params, bfloat16 for float32 params."""
    out = _Factored()
    # The usual case at once, natively (plain contiguous tensors, none sharing memory); else
    # one by one (the full path names what is wrong).
    state = [x for i in idx for x in (row_vars[i], col_vars[i])]
    plain = _buffers.prepare_plain([("state", state)], {"state"}) if state else None
    for k, i in enumerate(idx):
        p = bufs[k]
        shape = tuple(p.shape)
        if p.numel and not _row_major(shape, tuple(p.strides)):
            raise ValueError(
                f"{op}: params[{i}] ({p.describe()}, strides {p.strides}) must be contiguous: "
                f"Adafactor factors the last two dims of a row-major tensor"
            )
        rows, cols = shape[-2], shape[-1]
        for j, (name, want) in enumerate(
            (("row_vars", (*shape[:-1], 1)), ("col_vars", (*shape[:-2], 1, cols)))
        ):
            b = plain[2 * k + j] if plain is not None else None
            if b is None:
                b = _buffers.as_buffer(state[2 * k + j], f"{op}: {name}[{i}]", writable=True)
            if tuple(b.shape) != want or b.device != p.device:
                raise ValueError(
                    f"{op}: {name}[{i}] has {b.describe()}, expected shape {want}, device "
                    f"{p.device_str} (params[{i}] has {p.describe()})"
                )
            if j == 1:  # col_var: row_var's dtype
                ok = b.dtype == out.buffers[-1].dtype
            else:
                ok = b.dtype == p.dtype or (b.dtype, p.dtype) in _OTHER_STATE_DTYPES
            if not ok:
                if b.dtype == _buffers.CODES_DTYPE:
                    raise ValueError(f"{op}: {name}[{i}] holds uint8 codes; {_NO_8BIT}")
                raise TypeError(
                    f"{op}: {name}[{i}] has dtype {b.dtype} but params[{i}] has dtype "
                    f"{p.dtype} ({p.describe()}); expected the same dtype, or float32 state for "
                    f"float16/bfloat16 params, or bfloat16 state for float32 params"
                    + (f" (and row_vars[{i}]'s dtype)" if j == 1 else "")
                )
            if b.numel and not _row_major(want, tuple(b.strides)):
                raise ValueError(
                    f"{op}: {name}[{i}] ({b.describe()}, strides {b.strides}) must be contiguous"
                )
            out.buffers.append(b)
        out.rows.append(rows)
        out.cols.append(cols)
        row = out.buffers[-2]
        out.state_codes.append(-1 if row.dtype == p.dtype else row.dtype_code)
    return out


# (state dtype, param dtype) pairs other than the same dtype (LowPrecision's rule).
_OTHER_STATE_DTYPES = {
    ("float32", "float16"),
    ("float32", "bfloat16"),
    ("bfloat16", "float32"),
}


@functools.lru_cache(maxsize=4096)
def _row_major(shape: tuple[int, ...], strides: tuple[int, ...]) -> bool:
    """``strides`` are the row-major ones of ``shape`` (memoized: a model repeats its shapes)."""
    return strides == _buffers.contiguous_strides(shape)


def _buffer_name(
    op: str, k: int, flat: list[int], fact: list[int], extra: tuple[str, ...] = ()
) -> str:
    """The argument behind buffer ``k`` of adafactor_'s call list (flat params' slots, factored
    params' slots, each with the policy's ``extra`` list, then row_vars/col_vars pairs), for an
    error message."""
    parts = ((flat, ("params", "grads", "variances", *extra)), (fact, ("params", "grads", *extra)))
    for idx, names in parts:
        m = len(idx)
        if k < m * len(names):
            return f"{op}: {names[k // m]}[{idx[k % m]}]"
        k -= m * len(names)
    return f"{op}: {('row_vars', 'col_vars')[k % 2]}[{fact[k // 2]}]"


def _rank(x: Any, op: str, i: int) -> int:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(
            f"{op}: params[{i}]: expected a torch tensor or numpy array, got {type(x).__name__}"
        )
    return len(shape)


def _machine_eps(x: Any) -> float:
    """torch.finfo(dtype).eps of a tensor's or array's dtype."""
    import numpy as np

    if _buffers._is_torch_tensor(x):
        import torch

        return float(torch.finfo(x.dtype).eps)
    if str(x.dtype) == "bfloat16":
        return 2.0**-7
    return float(np.finfo(x.dtype).eps)


# --- shared ----------------------------------------------------------------------------------


def _check_none(op: str, slots: Sequence[tuple[str, Sequence[Any]]]) -> None:
    for name, values in slots:
        for i, x in enumerate(values):
            if x is None:
                raise ValueError(
                    f"{op}: {name}[{i}] is None; every param needs its {name} entry "
                    f"(initialise it as the reference optimizer does before the first step)"
                )


def pick(values: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    return [values[i] for i in idx]


def _scaling(op: str, options: StepOptions) -> GradScaling | None:
    """AMP's scalars of the call's ``options``, checked; None when AMP skips this step (read on
    the host: the scalars need the step, which a skipped step does not advance)."""
    grad_scale, found_inf = options.get("grad_scale"), options.get("found_inf")
    clip_coef = options.get("clip_coef")
    GradScaling(grad_scale, found_inf, clip_coef).check(op)
    if _steps.found_inf_is_set(found_inf):
        return None
    return GradScaling(grad_scale, None, clip_coef)


def _call(spec: Spec, h: Hyper, g: Group, step: float, scaling: GradScaling, **extra: Any) -> None:
    """One native call (``optimizer_step``, as the engine's) for group ``g`` at ``step``: the
    spec's scalars as host numbers in the kernel's Hyper order, its modes, AMP's pointers."""
    fields = spec.scalars(h, HostMath(g), step, {})
    core = _native.core()
    grad_scale, found_inf, clip_coef = scaling.pointers(g.device)
    core.optimizer_step(
        spec.kernel,
        g.slots,
        g.numels,
        g.dtype_code,
        g.device,
        g.stream,
        [float(fields[name]) for name in core.CODES["hyper_fields"][spec.kernel]],
        spec.modes(h),
        grad_scale=grad_scale,
        found_inf=found_inf,
        clip_coef=clip_coef,
        **extra,
    )
