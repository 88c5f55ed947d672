"""``FusedOptimizer``: the one base of every gradfuse optimizer.

A subclass is torch's constructor (signature, defaults, checks and messages) plus a class
attribute naming its functional update; the algorithm itself (state lists, counters,
hyperparameters, per-step scalars) is the update's spec (:mod:`gradfuse.functional._updates`),
so the class only maps torch's param groups and state onto it:

- state: ``state[p]`` holds torch's keys (the spec's ``State.key`` and counter names), created
  on the first step as torch creates them (counters as 0-dim tensors placed as torch places
  them), brought to the precision policy (:mod:`._precision`) on every step;
- ``step()``: the closure, GradScaler's scaling (``grad_scale``, ``found_inf``, which torch's
  GradScaler sets for optimizers with ``_step_supports_amp_scaling``), the ``max_grad_norm``
  clipping coefficient (one fused norm pass, applied inside the update), then one functional call
  per param group with the group's options as keyword arguments;
- ``state_dict``/``load_state_dict``/pickling: torch's layout, plus the rounding seed when
  stochastic rounding is on.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar, Generic, NamedTuple, TypedDict, TypeVar, cast, overload

import torch
from torch import Tensor
from torch.optim import optimizer as _torch_optimizer
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse import _native
from gradfuse._compile import is_compiling, record_real_views
from gradfuse._options import show_options
from gradfuse.functional import _engine
from gradfuse.functional._engine import Spec, State
from gradfuse.functional._multi_tensor import LayoutMismatch
from gradfuse.optim._precision import PrecisionPolicy
from gradfuse.optim._torch_compat import (
    capturable_step,
    check_capturable,
    check_fused_foreach,
    real_view,
    real_views_of,
    refuse_differentiable,
    same_list,
    scalar_state,
    upgrade_scalar_state,
)

T = TypeVar("T")

# The state key of each counter list of the functional layer, and its value before step 1.
_COUNTERS = {"state_steps": ("step", 0.0), "mu_products": ("mu_product", 1.0)}


class _PolicyOption(Generic[T]):
    """A read-only attribute of the optimizer that is its precision policy's option."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, optimizer: FusedOptimizer | None, owner: type) -> T:
        if optimizer is None:  # on the class: the descriptor itself, as a property is
            return self  # type: ignore[return-value]
        value: T = getattr(optimizer._precision, self.name)
        return value

    def __set__(self, optimizer: FusedOptimizer, value: T) -> None:
        # Without this, an assignment would make an instance attribute that shadows the policy
        # (and half the code would read one, half the other).
        raise AttributeError(
            f"{type(optimizer).__name__}.{self.name} is read-only: it is a precision option, set "
            f"in the constructor ({type(optimizer).__name__}(..., {self.name}=...))"
        )


class Gathered(NamedTuple):
    """A group's params that have a gradient, their gradients, and the functional's state
    lists and counters for them by functional name (:meth:`FusedOptimizer._gather`)."""

    params: list[Tensor]
    grads: list[Tensor]
    lists: dict[str, Any]


def group_values(group: dict[str, Any], *names: str) -> dict[str, Any]:
    """The param group's values of ``names``, as keyword arguments of a functional."""
    return {name: group[name] for name in names}


class _ClipOption(TypedDict, total=False):
    max_grad_norm: float | None


class PolicyOptions(TypedDict, total=False):
    """The precision policies alone (:mod:`._precision`): the ``**options`` of an optimizer
    whose own constructor already takes ``max_grad_norm`` (LAMB's is apex's)."""

    master_weights: bool
    state_dtype: torch.dtype | None
    rounding: str
    kahan: bool


class OptimizerOptions(_ClipOption, PolicyOptions, total=False):
    """gradfuse's keyword-only extensions of an optimizer (the defaults, off, and what they do:
    :meth:`FusedOptimizer.__init__`): ``max_grad_norm``, then the precision policies. A
    subclass takes them as ``**options: Unpack[OptimizerOptions]`` after torch's arguments."""


class FusedOptimizer(Optimizer):
    """What every gradfuse optimizer shares (see the module docstring).

    Subclasses set ``_update_fn`` (a :mod:`gradfuse.functional` update) and ``_spec`` (its
    spec), and may set ``_sparse_error`` (the RuntimeError for a sparse gradient; None: the
    subclass's :meth:`_sparse_step` handles them), ``_graph_capture_health_check`` (torch's
    Adam family runs it), ``_setstate_defaults`` (group keys older checkpoints may lack) and
    ``_counters_on_device`` (torch's rule for where ``step`` lives).
    """

    _step_supports_amp_scaling: ClassVar[bool] = True
    _graph_capture_health_check: ClassVar[bool] = False
    _update_fn: ClassVar[Callable[..., None]]
    _spec: ClassVar[Spec]
    _sparse_error: ClassVar[str | None] = None
    _setstate_defaults: ClassVar[dict[str, Any]] = {}

    max_grad_norm: float | None
    _precision: PrecisionPolicy
    # The state dicts this step filled for the first time (emptied again if the step raises).
    _initialized: list[dict[str, Any]] | None = None
    # The writes of this step's checked groups, run once all are checked (None: not in a step).
    _writes: list[Callable[[], None]] | None = None
    # Why 8-bit state is refused, for an optimizer whose state is not moments (None: allowed).
    _no_8bit: ClassVar[str | None] = None

    # The keys of torch's __setstate__ defaults (group keys older checkpoints may lack) whose
    # value is the constructor's default; __init_subclass__ fills _setstate_defaults from them.
    _setstate_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is None:
            return
        params = inspect.signature(init).parameters
        if "options" in params:  # torch's signature, then the extensions as keyword-only
            show_options(init, _EXTENSIONS)
        elif "kwargs" in params and "max_grad_norm" not in params:
            # the extensions among other keywords (pytorch_optimizer's ADOPT: take_extensions)
            show_options(init, _EXTENSIONS, OptimizerOptions)
        if "_setstate_keys" in vars(cls):
            own = vars(cls).get("_setstate_defaults", {})
            cls._setstate_defaults = {
                **{k: params[k].default for k in cls._setstate_keys if k in params},
                **own,
            }

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        """torch's ``Optimizer.__init__`` with ``defaults``, then the gradfuse extensions
        (:class:`OptimizerOptions`, keyword-only and off by default):

        - ``max_grad_norm``: clip the gradients to this global 2-norm inside the update (see
          :meth:`_clip_coef`); None: no clipping;
        - ``master_weights``, ``state_dtype``, ``rounding``, ``kahan``: the precision policies
          (:mod:`gradfuse.optim._precision`).
        """
        super().__init__(params, defaults)
        name = type(self).__name__
        self._precision = PrecisionPolicy.create(name, master_weights, state_dtype, rounding, kahan)
        self._precision.signed_keys = {st.key: st.signed for st in self._spec.state}
        if self._precision.q8 and self._no_8bit is not None:
            raise ValueError(
                f"{name}: state_dtype=torch.uint8 (8-bit state) is not available: {self._no_8bit}"
            )
        for group in self.param_groups:
            for i, p in enumerate(group["params"]):
                self._precision.check_param(name, p, i)
        if max_grad_norm is not None:
            value = float(max_grad_norm)
            if not value >= 0.0:
                raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm}")
            max_grad_norm = value
        self.max_grad_norm = max_grad_norm
        differentiable = bool(defaults.get("differentiable", False))
        check_fused_foreach(defaults.get("fused"), defaults.get("foreach"), differentiable)
        refuse_differentiable(name, differentiable)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, with the params checked against the precision policy
        as the constructor checks them (a param the policy refuses is refused here, not at a
        later step)."""
        params = param_group["params"]
        # torch's __init__ adds the first groups before the policy exists (it checks them); a
        # set is refused by torch with its own message.
        if hasattr(self, "_precision") and not isinstance(params, set):
            params = [params] if isinstance(params, Tensor) else list(params)
            param_group["params"] = params  # as torch lists them (a generator is read once)
            for i, entry in enumerate(params):
                # torch's named params are (name, param) pairs
                p = entry[1] if isinstance(entry, tuple) and len(entry) == 2 else entry
                if isinstance(p, Tensor):
                    self._precision.check_param(type(self).__name__, p, i)
        super().add_param_group(param_group)

    # The precision options, read-only (set them in the constructor).
    master_weights = _PolicyOption[bool]()
    state_dtype = _PolicyOption[Any]()
    rounding = _PolicyOption[str]()
    kahan = _PolicyOption[bool]()

    # --- state -------------------------------------------------------------------------------

    def _counters_on_device(self, group: dict[str, Any]) -> bool:
        """Where torch keeps this group's ``step``: on the param's device when capturable."""
        return bool(group.get("capturable", False))

    def _state_zeros(self, p: Tensor) -> Tensor:
        """A zero state tensor for ``p``: its layout, the state dtype."""
        return self._precision.full(p, 0)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """torch's first-step state of ``p``: its counters, then a zero tensor per state list
        the group's options use (created by the update itself for ``Spec.creates``)."""
        spec = self._spec
        on_device = self._counters_on_device(group)
        for name in spec.counters:
            key, initial = _COUNTERS[name]
            state[key] = scalar_state(initial, p.device, on_device, fused=group.get("fused"))
        for st in spec.state:
            if st.name != spec.creates and (st.when is None or st.when(group)):
                state[st.key] = self._state_zeros(p)

    def _group_state(self, group: dict[str, Any]) -> tuple[list[State], list[tuple[str, str]]]:
        """The spec's state lists that ``group``'s options use, and its counters as (functional
        name, state key): what :meth:`_gather_plain` and :meth:`_gather_any` collect."""
        spec = self._spec
        lists = [st for st in spec.state if st.when is None or st.when(group)]
        return lists, [(name, _COUNTERS[name][0]) for name in spec.counters]

    def _gather(self, group: dict[str, Any]) -> Gathered:
        """The params of ``group`` that have a gradient, their gradients, and the functional's state
        lists and counters for them, by functional name (state created where missing)."""
        gathered = self._gather_plain(group)
        return gathered if gathered is not None else self._gather_any(group)

    def _gather_plain(self, group: dict[str, Any]) -> Gathered | None:
        """:meth:`_gather` for the usual step, natively (``_core.gather_state``): every param
        with a gradient has its state already, no gradient is sparse, no param is complex,
        and no precision policy converts state; not under torch.compile, which traces the
        Python path (dynamo cannot trace into a native function). None otherwise (nothing
        created or read)."""
        if self._precision.changes_state or is_compiling():
            return None
        lists, counters = self._group_state(group)
        found = _native.core().gather_state(
            group["params"],
            self.state,
            tuple(st.key for st in lists),
            tuple(key for _, key in counters),
        )
        if found is None:
            return None
        params, grads, values, steps = found
        out = {st.name: v for st, v in zip(lists, values, strict=True)}
        out.update({name: c for (name, _), c in zip(counters, steps, strict=True)})
        return Gathered(params, grads, out)

    def _gather_any(self, group: dict[str, Any]) -> Gathered:
        lists, counters = self._group_state(group)
        params: list[Tensor] = []
        grads: list[Tensor] = []
        out: dict[str, list[Any]] = {st.name: [] for st in lists}
        out.update({name: [] for name, _ in counters})
        state_of = self.state
        prepare = self._precision.changes_state
        sparse_error = self._sparse_error
        stateful = bool(lists or counters or prepare)
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if sparse_error is not None and grad.is_sparse:
                raise RuntimeError(sparse_error)
            params.append(p)
            grads.append(grad)
            if not stateful:
                continue  # as torch: no state entry at all (SGD without momentum)
            state = state_of[p]
            if len(state) == 0:
                self._init_state(p, group, state)
                if self._initialized is not None:
                    self._initialized.append(state)
            if prepare:
                self._precision.prepare_state(p, state)
            for st in lists:
                out[st.name].append(state.get(st.key))
            for name, key in counters:
                out[name].append(state[key])
        return Gathered(params, grads, out)

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The functional's hyperparameter and flag keyword arguments from a param group."""
        kwargs: dict[str, Any] = {}
        for name, _ in self._spec.hyper_kinds():
            if name in ("beta1", "beta2"):
                kwargs[name] = group["betas"][name == "beta2"]
            else:
                kwargs[name] = group[name]
        for name in self._spec.flags:
            kwargs[name] = group[name]
        return kwargs

    # --- step --------------------------------------------------------------------------------

    def _defer(self, write: Callable[[], None]) -> None:
        """Run ``write`` once every param group of this step is checked (now, outside a step)."""
        if self._writes is None:
            write()
        else:
            self._writes.append(write)

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        """One functional call for the group's params that have a gradient: checked here, its
        writes deferred (:meth:`_defer`) until every group is checked. A subclass's update that
        does not defer writes group by group."""
        gathered = self._gather_plain(group)
        plain = gathered is not None  # then no gradient is sparse and no param complex
        if gathered is None:
            gathered = self._gather_any(group)
        params, grads, lists = gathered
        if not plain and any(g.is_sparse for g in grads):
            self._sparse_step(group, amp, gathered)
            return
        spec = self._spec
        options = self._options(group)
        if spec.capturable:
            names = ("params", *reversed(spec.counters))
            counters = [lists[c] for c in names[1:]]
            check_capturable(group["capturable"], params, *counters, what=_and_last(names))
            options["capturable"] = capturable_step(group, params)
        view = same_list if plain else real_views_of(params)
        # Complex params under torch.compile: the op takes the real views when it runs
        # (_compile.record_real_views); a traced program cannot hand an in-place op views it made.
        as_real = view is not same_list and is_compiling()
        if as_real:
            view = same_list
        created = spec.creates
        for st in spec.state:
            if st.name in lists and st.name != created:
                lists[st.name] = view(lists[st.name])
        if view is not same_list and created in lists:  # its None entries are created
            lists[created] = [None if t is None else real_view(t) for t in lists[created]]
        precision = self._precision
        if created is not None and created in lists and self.state_dtype is not None:
            # 8-bit state: uint8 codes for params of at least min_8bit_size elements only
            options["state_dtype"] = (
                [precision.dtype_for(p) for p in params] if precision.q8 else self.state_dtype
            )
        keys = tuple(st.key for st in spec.state if st.name in lists)
        lowprec = precision.kwargs(type(self).__name__, self.state, params, keys)
        # Whether this step creates state: afterwards the list holds the new tensors.
        new_state = lists.get(created) if created is not None else None
        creates = new_state is not None and any(map(operator.is_, new_state, repeat(None)))
        args = (view(params), view(grads))
        plans: list[Callable[[], None]] = []
        if as_real:
            record_real_views(type(self)._update_fn, *args, **lists, **options, **amp, **lowprec)
        elif is_compiling():  # traced as one custom op, which writes (dynamo cannot trace Planned)
            type(self)._update_fn(*args, **lists, **options, **amp, **lowprec)
        else:
            with _engine.Planned() as plans:
                type(self)._update_fn(*args, **lists, **options, **amp, **lowprec)

        def write() -> None:
            for apply in plans:
                apply()
            if creates and new_state is not None:
                self._keep_created(params, new_state, lowprec, keys)

        self._defer(write)

    def _keep_created(
        self, params: list[Tensor], new: list[Any], lowprec: dict[str, Any], keys: tuple[str, ...]
    ) -> None:
        """The state the update created (SGD's first momentum buffers), into ``self.state``."""
        spec = self._spec
        key = next(st.key for st in spec.state if st.name == spec.creates)
        absmax_lists = lowprec.get("state_absmax")  # 8-bit: filled in for new state
        absmax = absmax_lists[keys.index(key)] if absmax_lists else None
        state = self.state
        for i, (p, buf) in enumerate(zip(params, new, strict=True)):
            if buf is not None and key not in state[p]:
                # created by this step (None: an AMP-skipped step), complex as its param (under
                # torch.compile it was created complex: see record_real_views)
                as_complex = p.is_complex() and not buf.is_complex()
                state[p][key] = torch.view_as_complex(buf) if as_complex else buf
                if absmax is not None and absmax[i] is not None:
                    state[p][key + "_absmax"] = absmax[i]

    def _sparse_step(self, group: dict[str, Any], amp: dict[str, Any], gathered: Gathered) -> None:
        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    def _clip_coef(self, grad_scale: Tensor | None = None) -> Tensor | None:
        """The ``max_grad_norm`` clipping coefficient of this step (a 1-element float32 tensor),
        or None: ``min(max_grad_norm / (norm + 1e-6), 1)`` of the global 2-norm of every
        gradient (unscaled by ``grad_scale`` under AMP). The update multiplies each gradient by
        it as it reads it: ``p.grad`` is left as it was, and on CUDA nothing is read on the host.
        The result equals ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` then the step.
        """
        if self.max_grad_norm is None:
            return None
        from gradfuse import _clip

        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = _clip.total_norm("max_grad_norm", grads, 2.0)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device, norm.dtype).reshape(())
        coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
        return coef.to(torch.float32).reshape(1)

    # torch.optim.Optimizer.step's overloads, so that step types as torch's.
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).
        """
        if _observed(self):  # the hooks see the arguments as given (no closure: none)
            return _observed_step(self) if closure is None else _observed_step(self, closure)
        return self._step(closure)

    @torch.no_grad()
    def _step(self, closure: Callable[[], float] | None = None) -> float | None:
        """The step itself (:meth:`step` without torch's profiler range and hooks)."""
        if self._graph_capture_health_check:
            self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        amp = {
            "grad_scale": grad_scale,
            "found_inf": getattr(self, "found_inf", None),
            "clip_coef": self._clip_coef(grad_scale),
        }
        # Every group is checked before any is written: a step that raises leaves every param,
        # state tensor and counter as it was (updates that do not defer write group by group).
        writes: list[Callable[[], None]] = []
        # Entries made from here on are this step's (dicts keep order). Not under torch.compile:
        # reading the state dict there makes dynamo guard each param through it (a recompile
        # after every zero_grad).
        fresh = None if is_compiling() else len(self.state)
        initialized: list[dict[str, Any]] = []
        self._writes, self._initialized = writes, initialized
        try:
            for index, group in enumerate(self.param_groups):
                deferred = len(writes)
                self._checked_update(index, group, amp)
                if len(writes) == deferred and fresh is not None:
                    # This group wrote as it went (LAMB, Muon, ...): the state made so far is
                    # in use; only what later groups make goes again if one of them raises.
                    fresh = len(self.state)
                    initialized.clear()
        except BaseException:
            # A param's first state (zeros, step 0) goes again: the failed step changes nothing.
            for p in list(self.state)[fresh:] if fresh is not None else ():
                del self.state[p]
            for state in initialized:
                state.clear()
            raise
        finally:
            self._writes = self._initialized = None
        for write in writes:
            write()
        return loss

    def _checked_update(self, index: int, group: dict[str, Any], amp: dict[str, Any]) -> None:
        """:meth:`_update` of param group ``index``, its error saying which group it was."""
        calls = self._precision.calls
        try:
            undo = None
            try:
                self._update(group, amp)
            except LayoutMismatch:
                # State in another memory layout than its param's (the param re-laid since the
                # state was made), refused before anything was written: re-lay the state and
                # check the group again, with the stochastic-rounding seed it drew.
                undo = self._relayout_state(group["params"])
                if not undo:
                    raise
            if undo:
                self._precision.calls = calls
                try:
                    self._update(group, amp)
                except BaseException:
                    for state, key, value in undo:  # the failed step changes nothing
                        state[key] = value
                    raise
        except (ValueError, TypeError, RuntimeError) as e:
            if len(self.param_groups) > 1:
                e.add_note(
                    f"(in param group {index}; params[i] there counts the group's params that "
                    f"have a gradient)"
                )
            raise

    # --- checkpoints and pickling ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        self._precision.save(sd)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._precision.check_saved(type(self).__name__, self, state_dict)
        super().load_state_dict(state_dict)
        self._precision.load(self, state_dict)
        self._relayout_state([p for g in self.param_groups for p in g["params"]])

    def _relayout_state(self, params: list[Tensor]) -> list[tuple[dict[str, Any], str, Any]]:
        """Each param's state in the param's memory layout (a checkpoint saved before the model
        went channels-last, a param re-laid mid-run); returns (state, key, previous value) of
        every entry replaced."""
        state = self.state
        replaced: list[tuple[dict[str, Any], str, Any]] = []
        for p in params:
            if p in state:
                replaced += self._precision.relayout(p, state[p])
        return replaced

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["max_grad_norm"] = self.__dict__.get("max_grad_norm")
        state["_precision"] = self.__dict__.get("_precision", PrecisionPolicy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("max_grad_norm", None)
        self.__dict__.setdefault("_precision", PrecisionPolicy())
        self._precision.signed_keys = {st.key: st.signed for st in self._spec.state}
        for group in self.param_groups:
            for key, value in self._setstate_defaults.items():
                group.setdefault(key, value)
        for name in self._spec.counters:
            upgrade_scalar_state(
                self, _COUNTERS[name][0], self._counters_on_device, fused_key="fused"
            )


# torch.optim.Optimizer wraps each subclass's ``step`` in ``profile_hook_step``: a profiler
# range named "Optimizer.step#<class>.step" and the step pre/post hooks. Its record_function
# enter and exit cost ~33 us a step on the development machine even when no profiler runs, as
# much as a third of a step over a few hundred small tensors. FusedOptimizer.step takes torch's
# wrapper, unchanged, when it has something to do: a profiler (or NVTX/ITT range emitter) is on,
# a hook is registered on this optimizer or globally, or torch.compile traces the step;
# otherwise it calls the step directly. Marked ``hooked`` so that torch does not wrap it again
# (a subclass that overrides ``step`` is wrapped by torch as before).
_GLOBAL_HOOKS = tuple(
    getattr(_torch_optimizer, name, None)
    for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
)
_profiler_enabled = torch._C._autograd._profiler_enabled


def _observed(opt: FusedOptimizer) -> bool:
    """Whether ``opt.step()`` must run inside torch's ``profile_hook_step`` wrapper."""
    return bool(
        is_compiling()  # first: dynamo cannot trace the profiler query
        or _profiler_enabled()
        or opt._optimizer_step_pre_hooks
        or opt._optimizer_step_post_hooks
        or any(hooks is None or hooks for hooks in _GLOBAL_HOOKS)
    )


def _step_body(opt: FusedOptimizer, closure: Callable[[], float] | None = None) -> float | None:
    return opt._step(closure)


_observed_step = Optimizer.profile_hook_step(_step_body)
FusedOptimizer.step.hooked = True  # type: ignore[attr-defined]

# The extensions' defaults, as inspect shows them in a subclass's signature.
_EXTENSIONS = {
    p.name: p.default
    for p in inspect.signature(FusedOptimizer.__init__).parameters.values()
    if p.kind is inspect.Parameter.KEYWORD_ONLY
}


def take_extensions(kwargs: dict[str, Any]) -> OptimizerOptions:
    """The extensions (:class:`OptimizerOptions`) taken out of the ``**kwargs`` of a constructor
    that takes other keywords besides (its signature lists them before ``**kwargs``)."""
    return cast(OptimizerOptions, {k: kwargs.pop(k) for k in _EXTENSIONS if k in kwargs})


def _and_last(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} and {names[-1]}"
