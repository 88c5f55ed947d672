"""The optimizer engine: one driver for every fused update, each algorithm a :class:`Spec`.

An algorithm is three things: a per-element rule in ``src/gradfuse/math/`` (the native kernel),
a :class:`Spec` here (its state lists, counters, hyperparameters and per-step scalars), and a
thin public function in :mod:`gradfuse.functional` with torch's argument names. Everything else
is :func:`run`, in this order, for every algorithm:

1. check: hyperparameters, list lengths, missing state, counters, AMP scalars, then every tensor
   (``_multi_tensor.prepare``: dtype, layout, device, aliasing) and the precision policy; nothing
   has been written when any of these raises;
2. decide AMP's skip: where the host needs the step counters (bias corrections) or must create
   state from this step's gradient, ``found_inf`` is read on the host and a skipped step writes
   nothing, counters included; otherwise the kernels read it where the tensors live (no sync);
3. create missing state (SGD's momentum buffers on the first step), advance the counters
   (``step += 1``, NAdam's ``mu_product *= mu``);
4. group the tensors by (device, dtype, state dtype, counter values) and, per group, compute the
   per-step scalars with the spec's expressions and make one native call.

The scalars are written once per algorithm (``Spec.scalars``) for two kinds of values: host
numbers (the usual path: torch's Python expressions in double, one native call per distinct step)
and float64 vectors on the params' device, one entry per tensor (``capturable=True``, CUDA
graphs: nothing is read on the host; the step-dependent scalars go to the kernel as a per-tensor
table, ``_capturable``). :class:`HostMath` and :class:`DeviceMath` supply the few operations
whose spelling differs between the two (a conditional, a cast to a tensor ``lr``'s dtype).
"""

from __future__ import annotations

from collections.abc import Callable, MutableSequence, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from gradfuse import _buffers, _native
from gradfuse._options import check_options, option_names, show_options
from gradfuse.functional import _capturable, _steps
from gradfuse.functional._multi_tensor import GradScaling, Group, LowPrecision, group

Scalars = dict[str, Any]


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


def host_number_or_tensor(value: Any, name: str) -> Any:
    """A hyperparameter that may be a 1-element tensor, returned unchanged (a 0-dim tensor for a
    tensor, as torch's ``_to_scalar``), so the spec's expressions see exactly what torch's do."""
    to_float(value, name)
    if hasattr(value, "numel") and hasattr(value, "squeeze"):
        return value.squeeze()
    return value


# How a hyperparameter is checked (Spec.hyper): a float; a number or tensor kept as given on the
# host path (read by the expressions, as torch's for-loop reads it); a number or tensor that the
# kernel reads on the device (SGD's lr: no host sync even without capturable).
FLOAT, NUMBER_OR_TENSOR, DEVICE_NUMBER = "float", "number_or_tensor", "device_number"


@dataclass(frozen=True)
class State:
    """A state list of an algorithm: its functional name, the torch state key, whether the rule
    writes it, and the option that makes it present (None: always)."""

    name: str
    key: str
    written: bool = True
    when: Callable[[dict[str, Any]], bool] | None = None
    missing: str = ""  # the error when the option needs the list and it is None
    signed: bool = True  # 8-bit state: the signed dynamic map (False: a non-negative moment)


# torch's first and second moments (Adam's family, and every rule that keeps them): exp_avg, and
# exp_avg_sq, which is never negative (8-bit state takes the unsigned map for it).
EXP_AVG = State("exp_avgs", "exp_avg")
EXP_AVG_SQ = State("exp_avg_sqs", "exp_avg_sq", signed=False)
MOMENTS = (EXP_AVG, EXP_AVG_SQ)


@dataclass(frozen=True)
class Negated:
    """A table field that the rule takes negated (RMSprop's ``-lr``)."""

    name: str


@dataclass(frozen=True)
class Spec:
    """Everything the driver needs to know about one algorithm.

    ``kernel``: the native entry point. ``hyper``: the hyperparameters and how each is checked
    (capturable steps check ``lr`` as a number or device tensor and, with ``host_betas``, the
    betas as host numbers). ``state``: the state lists after params and grads, in slot order.
    ``counters``: per-param scalar state advanced by the driver (``"state_steps"`` is incremented;
    others are multiplied by ``counter_factors``). ``step_on_host``: the scalars depend on the
    counters, so the host path reads them (and AMP's verdict) before the kernels run.
    ``scalars(h, xp, step, counters)``: the native call's hyperparameter fields (and modes) for
    one group; ``table``: the names among them that a capturable call takes per tensor, in the
    row order of the rule's ``load_step_row``. ``modes``: the native call's flags, from ``h``;
    ``flags``: the boolean options the update takes (torch's param-group keys).
    ``creates``: the state list whose None entries are created from the gradient (SGD).
    ``capturable``: the update takes ``capturable=True`` (its optimizer class passes the
    group's option and checks torch's device rule).
    """

    op: str
    kernel: str
    hyper: tuple[tuple[str, str] | str, ...]  # a bare name: checked as FLOAT
    state: tuple[State, ...]
    scalars: Callable[[Any, Any, Any, dict[str, Any]], Scalars]
    modes: Callable[[Any], dict[str, Any]] = lambda h: {"maximize": bool(h.maximize)}
    flags: tuple[str, ...] = ("maximize",)
    counters: tuple[str, ...] = ()
    counter_factors: Callable[[Any, Any], dict[str, Any]] | None = None
    step_on_host: bool = False
    table: tuple[str | Negated, ...] = ()
    creates: str | None = None
    capturable: bool = False
    host_betas: bool = False

    def __post_init__(self) -> None:
        hyper = tuple((h, FLOAT) if isinstance(h, str) else h for h in self.hyper)
        object.__setattr__(self, "hyper", hyper)

    def hyper_kinds(self) -> tuple[tuple[str, str], ...]:
        """``hyper`` as (name, kind) pairs (a bare name became ``(name, FLOAT)``)."""
        return self.hyper  # type: ignore[return-value]


def unchanged(*names: str) -> Callable[[Any, Any, Any, dict[str, Any]], Scalars]:
    """``Spec.scalars`` of a rule that takes these hyperparameters as they are (nothing computed
    per step: SGD, RMSprop, Lion, Muon's momentum pass)."""
    return lambda h, xp, step, counters: {name: getattr(h, name) for name in names}


class Hyper:
    """The checked hyperparameters of one call, as attributes (``h.lr``, ``h.beta1``, ...)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:  # every option the call was given, typed as Any
        raise AttributeError(f"no hyperparameter {name!r}")


def check_hyper(spec: Spec, values: dict[str, Any], capturable: bool) -> Hyper:
    """Every hyperparameter of ``spec`` checked, in the spec's order (torch's order)."""
    out = dict(values)
    for name, kind in spec.hyper_kinds():
        v = values[name]
        if capturable and name == "lr":
            out[name] = _capturable.check_number(v, name)
        elif capturable and spec.host_betas and name in ("beta1", "beta2"):
            out[name] = _capturable.check_host_number(spec.op, v, name)
        elif kind == NUMBER_OR_TENSOR:
            out[name] = host_number_or_tensor(v, name)
        elif kind == DEVICE_NUMBER and _buffers._is_torch_tensor(v) and v.is_floating_point():
            out[name] = _capturable.check_number(v, name)
        else:
            out[name] = to_float(v, name)
    return Hyper(out)


def hyper_of(spec: Spec, arguments: dict[str, Any]) -> Hyper:
    """``spec``'s hyperparameters and flags picked by name from a public update's arguments (its
    ``locals()``), checked as for a host call (:func:`check_hyper`, not capturable)."""
    names = (*(name for name, _ in spec.hyper_kinds()), *spec.flags)
    return check_hyper(spec, {name: arguments[name] for name in names}, capturable=False)


class HostMath:
    """The spec expressions' helpers for host numbers (one native call per distinct step)."""

    on_device = False

    def __init__(self, g: Group) -> None:
        self.group = g

    @staticmethod
    def where(cond: Any, value: Callable[[], Any], otherwise: Any) -> Any:
        return value() if cond else otherwise

    @staticmethod
    def lr_cast(x: Any, lr: Any) -> Any:
        return x  # a Python number meets a tensor lr in the tensor's dtype already

    @staticmethod
    def lr_div(lr: Any, x: Any) -> Any:
        return lr / x

    def param_dtype(self, x: Any) -> Any:
        """A tensor hyperparameter cast to the params' dtype (torch's lerp weight)."""
        if hasattr(x, "to"):
            import torch

            codes = _buffers.DTYPE_CODES
            name = next(k for k, v in codes.items() if v == self.group.dtype_code)
            return x.to(dtype=getattr(torch, name))
        return x


class DeviceMath(HostMath):
    """The same helpers for float64 vectors on the params' device (capturable steps)."""

    on_device = True

    @staticmethod
    def where(cond: Any, value: Callable[[], Any], otherwise: Any) -> Any:
        import torch

        v = value()
        return torch.where(cond, v, torch.full_like(v, otherwise))

    @staticmethod
    def lr_cast(x: Any, lr: Any) -> Any:
        return _capturable.lr_cast(x, lr)

    @staticmethod
    def lr_div(lr: Any, x: Any) -> Any:
        return _capturable.lr_div(lr, x)


@dataclass
class Call:
    """One call's inputs: the lists by name, the counters, AMP scalars and the precision."""

    lists: dict[str, Sequence[Any] | None]
    counters: dict[str, Any] = field(default_factory=dict)
    grad_scale: Any = None
    found_inf: Any = None
    clip_coef: Any = None
    capturable: bool = False
    lowprec: LowPrecision = field(default_factory=LowPrecision)
    state_dtype: Any = None  # dtype of state the call creates (None: the params'), or one per param


# --- the public functions' arguments ----------------------------------------------------------


class AmpOptions(TypedDict, total=False):
    """AMP and clipping, taken by every update: torch.amp.GradScaler's scale and verdict and a
    global-norm clipping factor (optional 1-element float32 tensors, see :mod:`._updates`)."""

    grad_scale: Any
    found_inf: Any
    clip_coef: Any


class PrecisionOptions(TypedDict, total=False):
    """The low-precision policy of a call (:class:`~._multi_tensor.LowPrecision`)."""

    master_params: Sequence[Any] | None
    kahan_comps: Sequence[Any] | None
    rounding: str
    seed: int | None
    state_absmax: Sequence[Sequence[Any]] | None  # 8-bit state: absmax per state list


class StepOptions(AmpOptions, PrecisionOptions, total=False):
    """What every elementwise update takes as keywords besides its own arguments."""


class CapturableOptions(StepOptions, total=False):
    """:class:`StepOptions` and torch's ``capturable`` (the updates whose spec is capturable)."""

    capturable: bool


# The options' defaults (their meaning: the TypedDicts above).
OPTION_DEFAULTS: dict[str, Any] = {
    "grad_scale": None,
    "found_inf": None,
    "clip_coef": None,
    "master_params": None,
    "kahan_comps": None,
    "rounding": "nearest",
    "seed": None,
    "state_absmax": None,
    "capturable": False,
}
_STEP_OPTIONS = option_names(StepOptions)
_CAPTURABLE_OPTIONS = option_names(CapturableOptions)

F = TypeVar("F", bound=Callable[..., Any])


def with_options(fn: F) -> F:
    """A public function that takes ``**options: Unpack[<one of the TypedDicts above>]``: its
    signature lists them, with their defaults (for ``help()`` and torch.compile's layout)."""
    show_options(fn, OPTION_DEFAULTS)
    return fn


def written(spec: Spec) -> tuple[str, ...]:
    """The list arguments that ``spec``'s update writes in place (torch.compile's ``written``):
    the params (and their master copies, Kahan compensations), state lists, counters."""
    states = (st.name for st in spec.state if st.written)
    return ("master_params", "kahan_comps", "params", *states, *spec.counters)


def lowprec_of(options: PrecisionOptions) -> LowPrecision:
    """The call's low-precision policy from its keyword options."""
    return LowPrecision(
        options.get("master_params"),
        options.get("kahan_comps"),
        options.get("rounding", "nearest"),
        options.get("seed"),
        options.get("state_absmax"),
    )


def checked(spec: Spec, arguments: dict[str, Any]) -> tuple[Hyper, Call]:
    """A public update's arguments (its ``locals()``: ``params``, ``grads``, the spec's state
    lists and counters by name, the hyperparameters and flags, and ``options``, its keyword
    options) checked and sorted into the hyperparameters and the :class:`Call`."""
    options: CapturableOptions = arguments["options"]
    check_options(spec.op, options, _CAPTURABLE_OPTIONS if spec.capturable else _STEP_OPTIONS)
    lists = {"params": arguments["params"], "grads": arguments["grads"]}
    lists.update({st.name: arguments.get(st.name) for st in spec.state})
    counters = {name: arguments[name] for name in spec.counters}
    capturable = bool(options.get("capturable", False))
    given = (k for k in arguments if k not in lists and k not in counters and k != "options")
    h = check_hyper(spec, {k: arguments[k] for k in given}, capturable)
    call = Call(
        lists,
        counters,
        options.get("grad_scale"),
        options.get("found_inf"),
        options.get("clip_coef"),
        capturable,
        lowprec_of(options),
        state_dtype=arguments.get("state_dtype"),
    )
    return h, call


# Set by an optimizer that steps several param groups: each engine update checks its group and
# leaves its writes here, to run once every group has been checked (a failed check then leaves
# every group as it was, not only its own). See :class:`Planned`.
_PLANS: ContextVar[list[Callable[[], None]] | None] = ContextVar("gradfuse_plans", default=None)


class Planned:
    """Within this context, :func:`update` checks its arguments and appends the update itself
    (everything that writes) to the list it gives, instead of running it. (A class, not a
    generator: entered once per param group and step, it costs a third of one.)"""

    __slots__ = ("plans", "token")

    def __enter__(self) -> list[Callable[[], None]]:
        self.plans: list[Callable[[], None]] = []
        self.token = _PLANS.set(self.plans)
        return self.plans

    def __exit__(self, *exc: object) -> None:
        _PLANS.reset(self.token)


def update(spec: Spec, arguments: dict[str, Any]) -> None:
    """The body of a public update: ``run(spec, ...)`` on its arguments (see :func:`checked`);
    within :class:`Planned`, its writes are left to the caller."""
    h, call = checked(spec, arguments)
    apply = plan(spec, call, h)
    plans = _PLANS.get()
    if plans is None:
        apply()
    else:
        plans.append(apply)


def run(spec: Spec, call: Call, h: Hyper) -> None:
    """Check everything, then apply ``spec``'s update in place (see the module docstring)."""
    plan(spec, call, h)()


def _nothing() -> None:
    """The update of a step that AMP skips."""


def plan(spec: Spec, call: Call, h: Hyper) -> Callable[[], None]:
    """Check everything (steps 1 and 2 of the module docstring, and the new state of step 3,
    made but not yet handed to the caller's state) and return the update that writes."""
    op = spec.op
    params = call.lists["params"]
    assert params is not None
    n = len(params)
    options = h.__dict__
    slots: list[tuple[str, Sequence[Any]]] = [("params", params), ("grads", call.lists["grads"])]  # type: ignore[list-item]
    for st in spec.state:
        if st.when is not None and not st.when(options):
            continue
        values = call.lists.get(st.name)
        if values is None:
            raise ValueError(f"{op}: {st.missing}")
        if st.name != spec.creates:
            for i, x in enumerate(values):
                if x is None:
                    raise ValueError(
                        f"{op}: {st.name}[{i}] is None; every param needs its {st.name} entry "
                        f"(initialise it as the torch optimizer does before the first step)"
                    )
        slots.append((st.name, values))
    capturable = call.capturable
    counters = {name: c for name, c in call.counters.items() if c is not None}
    for name, c in counters.items():
        if capturable:
            _capturable.check_counters(op, name, c, params)
        else:
            _steps.check_counters(op, name, c, n, "params")
    if capturable:
        _capturable.check_found_inf(op, call.found_inf)
    scaling = GradScaling(call.grad_scale, call.found_inf, call.clip_coef)
    scaling.check(op)
    lowprec = call.lowprec
    lowprec.signed = [st.signed for st in spec.state if st.name in dict(slots)]
    written = tuple(st.name for st in spec.state if st.written)
    buffers, depth = lowprec.prepare_buffers(op, slots, ("params", *written))
    if capturable and not lowprec.is_default:
        raise ValueError(
            f"{op}: capturable=True takes neither master_params, kahan_comps, "
            f"rounding='stochastic' nor state of another dtype than the params' (not "
            f"supported yet); use capturable=False for low-precision policies"
        )
    keys: list[Any] | None = None
    created = _created_slot(spec, slots, buffers, n)
    if not capturable and (spec.step_on_host or created is not None):
        # The host needs the counters (or this step's gradient for new state): AMP's verdict
        # is read here, and a skipped step writes nothing at all.
        if _steps.found_inf_is_set(call.found_inf):
            return _nothing
        scaling = GradScaling(call.grad_scale, None, call.clip_coef)
    if created is not None:
        buffers = list(buffers)  # a PreparedList is read-only: the new state joins a list
        keys = _create_state(spec, call, slots, buffers, n, created)
    return lambda: _apply(spec, call, h, buffers, depth, n, counters, scaling, keys)


def _apply(
    spec: Spec,
    call: Call,
    h: Hyper,
    buffers: Sequence[Any],
    depth: int,
    n: int,
    counters: dict[str, Any],
    scaling: GradScaling,
    keys: list[Any] | None,
) -> None:
    """The writes of a checked update: the counters advanced, then one native call per group
    (steps 3 and 4 of the module docstring)."""
    capturable = call.capturable
    lowprec = call.lowprec
    options = h.__dict__
    if "state_steps" in counters:
        if spec.step_on_host and not capturable:
            keys = _advance_on_host(spec, h, counters)
        else:  # the update does not need the values on the host: advanced where they live
            _steps.advance(counters["state_steps"], call.found_inf)
    core = _native.core()
    hyper_fields = core.CODES["hyper_fields"][spec.kernel]
    on_device = capturable or any(
        kind == DEVICE_NUMBER and _buffers._is_torch_tensor(options[name])
        for name, kind in spec.hyper_kinds()
    )
    for k, g in enumerate(group(buffers, depth, n, keys, *lowprec.layout, native=True)):
        key = keys[g.indices[0]] if keys is not None else None
        table: Any = None
        table_args: dict[str, int] = {}
        if on_device:
            fields, table, table_args = _device_fields(spec, h, g, counters, call.found_inf)
        else:
            fields = _host_fields(spec, h, g, key)
        if spec.creates is not None:
            fields["first_step"] = bool(key)  # the key of a creating call: new state or not
        # The kernel's hyperparameters in its Hyper struct's order; every other field (a
        # per-group flag such as RAdam's rectify) is a mode, beside the spec's.
        hyper = [fields.pop(name) for name in hyper_fields]
        core.optimizer_step(
            spec.kernel,
            g.prepared if g.prepared is not None else g.slots + lowprec.absmax_slots(g),
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            hyper,
            {**fields, **spec.modes(h)},
            **dict(zip(_SCALING_NAMES, scaling.pointers(g.device), strict=True)),
            **table_args,
            **lowprec.kwargs(g, k),
        )
        del table  # kept alive until the kernel has been launched (stream-ordered on CUDA)


_SCALING_NAMES = ("grad_scale", "found_inf", "clip_coef")


def _created_slot(
    spec: Spec, slots: list[tuple[str, Sequence[Any]]], buffers: Sequence[Any], n: int
) -> int | None:
    """The slot whose None entries this call creates, if any entry is None."""
    for d, (name, _) in enumerate(slots):
        if name == spec.creates and _buffers.none_in(buffers, d * n, (d + 1) * n):
            return d
    return None


def _create_state(
    spec: Spec,
    call: Call,
    slots: list[tuple[str, Sequence[Any]]],
    buffers: list[Any],
    n: int,
    d: int,
) -> list[bool]:
    """New state for the None entries of slot ``d``, initialised by the rule from this step's
    gradient (``first`` key per tensor); handed to the caller's list only once all are checked."""
    name, values = slots[d]
    if not isinstance(values, MutableSequence):
        raise TypeError(
            f"{spec.op}: {name} has None entries to create, so it must be a mutable sequence "
            f"(a list), got {type(values).__name__}"
        )
    params = slots[0][1]
    first = [False] * n
    created: dict[int, Any] = {}
    lowprec = call.lowprec
    per_param = isinstance(call.state_dtype, (list, tuple))
    for i in range(n):
        if buffers[d * n + i] is None:
            dtype = call.state_dtype[i] if per_param else call.state_dtype
            new = _empty_like(params[i], dtype)
            codes = _is_uint8(new)
            if codes:  # 8-bit state: codes of zero and their absmax, zero
                new.zero_()
                _new_absmax(spec.op, lowprec, d - 2, i, new)
            b = _buffers.as_buffer(new, f"{spec.op}: {name}[{i}]", writable=True, codes=codes)
            buffers[d * n + i] = b
            ref = buffers[i]
            if ref is not None and b.dtype != ref.dtype:
                lowprec.mismatches.append((d, i))
            created[i] = new
            first[i] = True
    lowprec.check(spec.op, buffers, n)  # the new buffers' dtype, before any is handed out
    for i, new in created.items():
        values[i] = new
    return first


def _is_uint8(x: Any) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and x.dtype == torch.uint8


def _new_absmax(op: str, lowprec: LowPrecision, k: int, i: int, codes: Any) -> None:
    """The absmax of new 8-bit state ``codes`` (slot ``k`` of the state lists, param ``i``),
    on their device, into the caller's ``state_absmax`` list, where the caller finds it after
    the call."""
    import torch

    lists = lowprec.state_absmax
    target = lists[k] if lists is not None and k < len(lists) else None
    if not isinstance(target, MutableSequence):
        raise TypeError(
            f"{op}: new 8-bit state needs state_absmax, one mutable list per state list (its "
            f"entries for new state are filled in)"
        )
    target[i] = torch.zeros(-(-codes.numel() // 256), dtype=torch.float32, device=codes.device)


def _empty_like(x: Any, dtype: Any = None) -> Any:
    if _buffers._is_torch_tensor(x):
        import torch

        return torch.empty_like(x, dtype=dtype)
    import numpy as np

    return np.empty_like(x, dtype=dtype)


def _advance_on_host(spec: Spec, h: Hyper, counters: dict[str, Any]) -> list[Any]:
    """``step += 1`` for every param, then the spec's other counters multiplied by their factor
    of the new step; returns each param's grouping key (its step and counter values)."""
    steps = _steps.increment_all(counters["state_steps"])
    others = [name for name in spec.counters if name != "state_steps" and name in counters]
    if not others:
        return steps
    assert spec.counter_factors is not None
    keys: list[Any] = []
    for i, step in enumerate(steps):
        factors = spec.counter_factors(h, step)
        keys.append((step, *(_steps.multiply(counters[name], i, factors[name]) for name in others)))
    return keys


def _host_fields(spec: Spec, h: Hyper, g: Group, key: Any) -> dict[str, Any]:
    """The scalars of one host group, as host numbers (``key``: the group's counter values)."""
    step, values = None, {}
    if spec.step_on_host:
        step = key
        if isinstance(key, tuple):
            others = [name for name in spec.counters if name != "state_steps"]
            step, values = key[0], dict(zip(others, key[1:], strict=True))
    fields = spec.scalars(h, HostMath(g), step, values)
    return {k: v if isinstance(v, (bool, int)) else float(v) for k, v in fields.items()}


def _device_fields(
    spec: Spec, h: Hyper, g: Group, counters: dict[str, Any], found_inf: Any
) -> tuple[dict[str, Any], Any, dict[str, int]]:
    """The scalars of one capturable group: the step-dependent ones as a per-tensor table on the
    device (returned, to be kept alive, with its address and row stride), the others as host
    numbers."""
    steps = counters.get("state_steps")
    if spec.step_on_host and steps is not None:
        step = _capturable.step_values(steps, g)
    else:
        step = _capturable.group_zeros(g)
    values: dict[str, Any] = {}
    if spec.counter_factors is not None:
        import torch

        factors = spec.counter_factors(h, step)
        for name, mu in factors.items():
            # c *= factor in the counters' own dtype, by 1 where AMP skips the step.
            own = [counters[name][i] for i in g.indices]
            factor = mu
            if found_inf is not None:
                skipped = found_inf.reshape(()).to(step.device) != 0
                factor = torch.where(skipped, torch.ones_like(mu), mu)
            torch._foreach_mul_(
                own, [f.to(c.dtype) for f, c in zip(factor.unbind(0), own, strict=True)]
            )
            values[name] = torch.stack([c.reshape(()) for c in own]).to(torch.float64)
    fields = spec.scalars(h, DeviceMath(g), step, values)
    columns = []
    for entry in spec.table:
        name = entry.name if isinstance(entry, Negated) else entry
        value = fields[name]
        columns.append(-_capturable.column(value, step) if isinstance(entry, Negated) else value)
        fields[name] = 0.0  # per tensor, from the table
    table, table_ptr, stride = _capturable.build_table(g, step, columns)
    for name, value in fields.items():
        # Every other scalar is a host number: a tensor here would be read on the host.
        assert not _buffers._is_torch_tensor(value), f"{spec.op}: {name} is not a table field"
    return fields, table, {"step_table": table_ptr, "step_table_stride": stride}
