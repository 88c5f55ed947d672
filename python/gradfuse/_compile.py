"""torch.compile support: gradfuse's fused updates as one torch.library custom op.

TorchDynamo cannot trace into gradfuse's native calls (they hand raw data pointers to
``gradfuse._core``). So, while torch.compile traces, every function of
:mod:`gradfuse.functional` decorated with :func:`traceable` is recorded as ONE opaque call of
the custom op ``gradfuse::fused_update_`` instead: the graph keeps no break, inductor
schedules it like any other in-place op, and at run time the op calls the very same eager
function on the real tensors (same validation, same kernels, same results as eager).

The op is generic: its arguments are the name of the functional (``"sgd_"``, ``"adamw_"``, ...)
and that function's arguments flattened into typed lists (tensors updated in place, tensors
read, floats, ints, tensor scalars) plus an integer ``layout`` saying how to put them back (one
code per argument, in signature order, each followed by its operands: the layout codes below).
A new optimizer needs one line: ``@traceable(written=(...))`` on its functional, naming every
list the function updates in place (params, state, per-param step tensors if it keeps them);
its first argument must be ``params`` (new state is allocated like it). ``state_absmax`` (8-bit
state: new absmax every step) is always written.

List arguments may hold ``None`` entries (Adafactor's ``row_vars`` for a bias, the
``master_params`` of float32 params, the ``state_absmax`` of params whose state is not 8-bit)
and lists (``state_absmax``: one list per state list): the nesting and the ``None`` entries
travel in the layout, and the eager function gets them back as they were.

A callable argument (ADOPT's ``clip_lambda``, called with each step's count) travels as its index
in a table of the callables traced so far in this process (dynamo guards on the object itself, so
another callable recompiles).

State created on the first step (SGD's ``momentum_buffers`` entries that are ``None`` when
``momentum != 0``: the lists named in ``traceable(creates=...)``, whose predicate holds) is
created by the traced code with ``torch.empty_like`` (in the call's ``state_dtype``; for 8-bit
codes, their absmax too), so that it lands in the optimizer's state as in eager, passed to the
op as written tensors, and filled by the op: the eager function runs with ``None`` there, as on
a first eager step, and its result is copied into the new tensor. Every other ``None`` stays
``None``. One thing eager can do that a traced program cannot: leave the state uncreated
(AMP skips a first step whose gradients are inf/nan). The traced program has already handed
the new tensors to the state, so the op zeroes them; the next step then starts from zero state
(for SGD: the same buffer as eager's when ``dampening == 0``).

Complex params (an optimizer's eager step hands its functional their ``torch.view_as_real``
views): the optimizer records the call with :func:`record_real_views`, the complex tensors as
they are, and the op takes the views when it runs (its layout starts with ``_REAL_VIEWS``). Such
a call is the functional op ``gradfuse::fused_update``, whose new values the traced program
copies back: inductor cannot take an in-place custom op on complex tensors.

``max_grad_norm`` and :func:`gradfuse.clip_grad_norm_` reduce the gradients natively too: under
torch.compile :mod:`gradfuse._clip` calls the ops ``gradfuse::total_norm`` and
``gradfuse::scale_grads_``, which run the eager functions (the same bits). So does 8-bit state's
quantization (:func:`gradfuse.optim._quant8.quantize_blockwise`: the fresh zero state of a first
step, a float checkpoint's state), as ``gradfuse::quantize_blockwise8``.

Losses (hook for the loss functions): they are pure functions with outputs (loss, grad), not
in-place updates, so they want their own ops: ``torch.library.custom_op("gradfuse::<loss>",
mutates_args=())`` returning the loss and the input gradient, a ``register_fake`` giving their
shapes, and ``register_autograd`` scaling the saved gradient by ``grad_output``. Define them
in this module, next to :func:`_define_ops`, and define them from :func:`register_ops`.

Torch is imported only when a torch tensor is being traced; numpy users never load it.
"""

from __future__ import annotations

import functools
import inspect
import numbers
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., None])

# The functionals that can be recorded, by name: (function, its parameter names, written
# slots, predicate per slot telling whether the function creates its None entries).
_REGISTRY: dict[
    str, tuple[Callable[..., None], tuple[str, ...], frozenset[str], dict[str, Any]]
] = {}

# Written by every update that takes it: 8-bit state gets a new absmax every step.
_ALWAYS_WRITTEN = ("state_absmax",)

# Layout codes: one per parameter of the functional, in signature order, then its operands.
(
    _ABSENT,  # left to its default
    _NONE,
    _FLOAT,  # the next value of `floats`
    _BOOL,  # operand: 0 or 1
    _INT,  # the next two values of `ints`: high * 2**32 + low
    _TENSOR,  # the next of `tensors`
    _NUM_LIST,  # operand n: the next n `floats`, as a list
    _NUM_TUPLE,  # operand n: the next n `floats`, as a tuple
    _DTYPE,  # operand: the dtype's index in _dtypes()
    _DTYPES,  # operand n, then n dtype indices: a list of dtypes (a per-param state_dtype)
    _STR,  # operand n, then n code points
    _WRITTEN,  # operand n, then n entries from `written`
    _READ,  # operand n, then n entries from `read`
    _CALLABLE,  # operand: the callable's index in _CALLABLES (ADOPT's clip_lambda)
) = range(14)
# A layout's first code, before the codes above, when the call was recorded by
# record_real_views: the op hands the function the real views of the complex tensors it writes
# and reads (torch.view_as_real), as an optimizer's eager step does.
_REAL_VIEWS = 14
# Entry codes of a _WRITTEN / _READ list.
(
    _E_TENSOR,  # the next tensor of the list's source
    _E_NONE,  # None, as given
    _E_FRESH,  # the next of `written`: new state; None for the function, filled in after
    _E_LIST,  # operand m, then m entries: a nested list (state_absmax)
) = range(4)

# The callables traced calls have passed (ADOPT's clip_lambda), by the index their layout
# names: appended while dynamo traces (by :func:`_callable_index`, which dynamo runs rather than
# traces). Held by weak reference where the object allows one: a closure may hold a model, and
# the table must not keep it alive after its optimizer is gone (a program whose callable died
# fails dynamo's guard on that object, and the index is never reused).
_CALLABLES: list[Callable[[], Callable[..., Any] | None]] = []


def _held(fn: Callable[..., Any]) -> Callable[[], Callable[..., Any] | None]:
    """A weak reference to ``fn`` or, for an object that takes none, a strong one."""
    try:
        return weakref.ref(fn)
    except TypeError:
        return lambda: fn


OP_NAME = "gradfuse::fused_update_"
_SCHEMA = (
    "(str name, Tensor(a!)[] written, Tensor[] read, float[] floats, SymInt[] ints, "
    "Tensor[] tensors, int[] layout) -> ()"
)
# The same update as a functional op (new values of `written` returned, copied back by the traced
# program): the calls of record_real_views. Inductor never decomposes an in-place custom op whose
# arguments are complex (it skips nodes with complex inputs, then asserts
# "auto_functionalized_v2 was not removed"); a functional op is a plain fallback kernel to it.
FUNCTIONAL_OP = "gradfuse::fused_update"
_FUNCTIONAL_SCHEMA = (
    "(str name, Tensor[] written, Tensor[] read, float[] floats, SymInt[] ints, "
    "Tensor[] tensors, int[] layout) -> Tensor[]"
)
NORM_OP = "gradfuse::total_norm"
_NORM_SCHEMA = "(str op, Tensor[] grads, float norm_type) -> Tensor"
SCALE_OP = "gradfuse::scale_grads_"
_SCALE_SCHEMA = "(Tensor(a!)[] grads, Tensor clip_coef) -> ()"
QUANTIZE_OP = "gradfuse::quantize_blockwise8"
_QUANTIZE_SCHEMA = "(Tensor x, bool signed) -> (Tensor, Tensor)"


def is_compiling() -> bool:
    """True while torch.compile (dynamo) traces; False when torch was never imported."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    return bool(torch.compiler.is_compiling())


def traceable(
    written: Sequence[str],
    creates: Mapping[str, Callable[[Mapping[str, Any]], bool]] | None = None,
) -> Callable[[F], F]:
    """Let a functional update run inside torch.compile as the ``gradfuse::fused_update_`` op.

    ``written``: the names of the list arguments updated in place (params, state). Every other
    list argument is read only (``state_absmax`` is always written). ``creates[name](kwargs)``:
    whether the function creates the ``None`` entries of written list ``name`` for these
    arguments; the ``None`` entries of the lists not named stay ``None``.
    """

    def wrap(fn: F) -> F:
        name = fn.__name__
        params = tuple(inspect.signature(fn).parameters)
        slots = frozenset(written) | frozenset(p for p in _ALWAYS_WRITTEN if p in params)
        _REGISTRY[name] = (fn, params, slots, dict(creates or {}))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            if not is_compiling():
                return fn(*args, **kwargs)
            bound = dict(zip(params, args, strict=False))
            bound.update(kwargs)
            _record(name, bound)
            return None

        return wrapper  # type: ignore[return-value]

    return wrap


def record_real_views(fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Record ``fn`` (a :func:`traceable` functional) under torch.compile with its complex
    tensors as they are: the op hands ``fn`` their real views (``torch.view_as_real``) when it
    runs, as an optimizer's eager step does (the functionals take no complex tensors). The
    traced program must not make the views itself: torch.compile cannot pass views created
    inside it to an in-place custom op (aot_autograd: "setStorage ... out of bounds"). Nor can
    inductor take an in-place custom op on complex tensors at all, so the call is the functional
    op ``gradfuse::fused_update`` (the same update on copies of the written tensors), whose
    results the traced program copies back. New state (SGD's first momentum buffers) is created
    complex, like its param."""
    name = fn.__name__
    bound = dict(zip(_REGISTRY[name][1], args, strict=False))
    bound.update(kwargs)
    _record(name, bound, real_views=True)


def require_op(op: str, caller: str) -> None:
    """Raise unless ``op`` is defined (tracing must never define it: dynamo would trace the
    definition)."""
    if op not in _DEFINED:
        raise RuntimeError(
            f"{caller}: gradfuse's custom op {op} is not defined yet; import gradfuse.optim (or "
            f"call gradfuse._compile.register_ops()) before torch.compile traces gradfuse functions"
        )


class _Recording:
    """A traced call's arguments, flattened into the op's typed lists (see the layout codes)."""

    def __init__(self, name: str, bound: dict[str, Any]) -> None:
        self.name = name
        self.bound = bound
        self.written: list[Any] = []
        self.read: list[Any] = []
        self.floats: list[float] = []
        self.ints: list[int] = []
        self.tensors: list[Any] = []
        self.layout: list[int] = []
        # Params whose new state (created by this call) is 8-bit: their absmax is new too.
        self.new_8bit: set[int] = set()

    def value(self, p: str, v: Any, written: bool, creates: bool) -> None:
        import torch

        lay = self.layout
        if v is None:
            lay.append(_NONE)
        elif isinstance(v, bool):
            lay += [_BOOL, int(v)]
        elif isinstance(v, torch.dtype):
            lay += [_DTYPE, _dtypes().index(v)]
        elif isinstance(v, str):
            lay += [_STR, len(v), *(ord(c) for c in v)]
        elif isinstance(v, torch.Tensor):
            self.tensors.append(v)
            lay.append(_TENSOR)
        elif callable(v):
            # A Python callable cannot be an operand of an op: the layout names it by its index
            # in _CALLABLES instead. id(v) makes dynamo guard on this very object (it guards a
            # function on its code alone otherwise: a closure with other values would reuse the
            # program, and the index, of the first).
            _ = id(v)
            lay += [_CALLABLE, _callable_index(v)]
        elif isinstance(v, int):
            # Exactly (a float would round a 64-bit stochastic-rounding seed), as two int64
            # halves (a seed may reach 2**64), with no comparison: a seed dynamo traces as a
            # symbolic int would be guarded on, and recompiled for, by any test of its value.
            self.ints += [v >> 32, v & 0xFFFFFFFF]
            lay.append(_INT)
        elif isinstance(v, float | numbers.Real):
            self.floats.append(float(v))
            lay.append(_FLOAT)
        elif isinstance(v, list | tuple) and not written and _numbers(v):
            # A list/tuple of numbers (e.g. betas): carried in `floats`, rebuilt as floats.
            self.floats.extend(float(x) for x in v)
            lay += [_NUM_TUPLE if isinstance(v, tuple) else _NUM_LIST, len(v)]
        elif isinstance(v, list | tuple) and not written and _dtype_list(v):
            lay += [_DTYPES, len(v), *(_dtypes().index(x) for x in v)]
        elif isinstance(v, list | tuple):
            lay += [_WRITTEN if written else _READ, len(v)]
            fresh: Callable[[tuple[int, ...]], Any] | None = None
            if p == "state_absmax":  # one list per state list, of one entry per param
                fresh = self._fresh_absmax
            elif creates:
                if isinstance(v, tuple) and any(x is None for x in v):
                    # eager's refusal (the new state could not be handed back)
                    raise TypeError(
                        f"{self.name}: {p} has None entries to create, so it must be a mutable "
                        f"sequence (a list), got tuple"
                    )
                fresh = functools.partial(self._fresh_state, p)
            self.entries(v, written, fresh, ())
        else:
            raise TypeError(
                f"{self.name}: argument {p} ({type(v).__name__}) cannot be recorded for "
                f"torch.compile (expected None, a number, a string, a dtype, a tensor, a "
                f"callable or a list of them)"
            )

    def entries(
        self,
        v: Sequence[Any],
        written: bool,
        fresh: Callable[[tuple[int, ...]], Any] | None,
        path: tuple[int, ...],
    ) -> None:
        """One list argument's entries, nested lists' too (``path``: the indices down to
        ``v``); ``fresh(path)``: the new tensor for the None entry at ``path`` if the function
        creates it (None: it stays None)."""
        for i, entry in enumerate(v):
            if entry is None:
                new = None if fresh is None else fresh((*path, i))
                if new is None:
                    self.layout.append(_E_NONE)
                    continue
                if isinstance(v, list):  # the caller's list gets the new state, as in eager
                    v[i] = new
                self.written.append(new)
                self.layout.append(_E_FRESH)
            elif isinstance(entry, list | tuple):
                self.layout += [_E_LIST, len(entry)]
                self.entries(entry, written, fresh, (*path, i))
            else:
                (self.written if written else self.read).append(entry)
                self.layout.append(_E_TENSOR)

    def _fresh_state(self, p: str, path: tuple[int, ...]) -> Any:
        """The tensor for new state entry ``p[i]``: as the eager update allocates it, like the
        param in the call's ``state_dtype`` (one dtype, or one per param; None: the param's)."""
        import torch

        if len(path) != 1:
            return None
        (i,) = path
        param = self.bound["params"][i]
        dtype = self.bound.get("state_dtype")
        if isinstance(dtype, list | tuple):
            dtype = dtype[i]
        if dtype == torch.uint8:
            self.new_8bit.add(i)
        return torch.empty_like(param, dtype=dtype)

    def _fresh_absmax(self, path: tuple[int, ...]) -> Any:
        """The absmax of new 8-bit state (``state_absmax[k][i]``), which the function creates with
        the state: one float32 per 256 codes. Every other None entry stays None."""
        import torch

        # new_8bit is filled in already: the state lists precede the options in a signature.
        if len(path) != 2 or path[1] not in self.new_8bit:
            return None
        i = path[1]
        if len(self.bound["state_absmax"]) != 1:
            # Only SGD creates state, and it has one state list: the absmax list is the first.
            raise NotImplementedError(
                f"{self.name}: new 8-bit state under torch.compile is supported for updates with "
                f"one state list only"
            )
        param = self.bound["params"][i]
        return torch.empty(-(-param.numel() // 256), dtype=torch.float32, device=param.device)


def _record(name: str, bound: dict[str, Any], real_views: bool = False) -> None:
    """Flatten a traced call into the op's typed arguments and call the op (``real_views``: see
    :func:`record_real_views`)."""
    import torch

    _, params, written_names, creates = _REGISTRY[name]
    rec = _Recording(name, bound)
    if real_views:
        rec.layout.append(_REAL_VIEWS)
    for p in params:
        if p not in bound:
            rec.layout.append(_ABSENT)  # left to its default
            continue
        make = creates.get(p)
        rec.value(p, bound[p], p in written_names, make is not None and bool(make(bound)))
    args = (name, rec.written, rec.read, rec.floats, rec.ints, rec.tensors, rec.layout)
    if real_views:
        require_op(FUNCTIONAL_OP, name)
        for t, new in zip(rec.written, torch.ops.gradfuse.fused_update(*args), strict=True):
            t.copy_(new)
    else:
        require_op(OP_NAME, name)
        torch.ops.gradfuse.fused_update_(*args)


def _callable_index(fn: Callable[..., Any]) -> int:
    """``fn``'s index in :data:`_CALLABLES` (appended if new). Dynamo runs it while it traces
    (marked below), its result a constant of the program: the op finds ``fn`` there when the
    program runs."""
    for i, known in enumerate(_CALLABLES):
        if known() is fn:
            return i
    _CALLABLES.append(_held(fn))
    return len(_CALLABLES) - 1


# torch._dynamo.assume_constant_result(_callable_index), spelled as what it does (it sets this
# attribute, torch/_dynamo/decorators.py): importing torch._dynamo to call it would add ~1.3 s to
# `import gradfuse.optim`. tests/integrations/test_compile.py checks the attribute is dynamo's.
_callable_index._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _numbers(v: Sequence[Any]) -> bool:
    """A non-empty sequence of plain numbers (no tensors, no None)."""
    return len(v) > 0 and all(isinstance(x, int | float) and not hasattr(x, "data_ptr") for x in v)


def _dtype_list(v: Sequence[Any]) -> bool:
    import torch

    return len(v) > 0 and all(isinstance(x, torch.dtype) for x in v)


def _dtypes() -> tuple[Any, ...]:
    """The dtypes a layout can name, by index (fixed: a compiled graph cached on disk keeps
    the indices)."""
    import torch

    return (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )


class _Reader:
    """Rebuilds a recorded call from the op's arguments (the inverse of :class:`_Recording`)."""

    def __init__(self, name: str, sources: dict[str, list[Any]], layout: list[int]) -> None:
        """``sources``: the op's lists by argument name (written, read, floats, ints, tensors)."""
        self.name = name
        self.sources = sources
        self.at = dict.fromkeys(self.sources, 0)
        self.layout = layout
        self.pos = 0
        # (list, index, tensor): new state, filled in from list[index] after the call
        self.fresh: list[tuple[list[Any], int, Any]] = []

    def code(self) -> int:
        if self.pos >= len(self.layout):
            raise ValueError(f"{OP_NAME}: layout of {self.name} ends early (at {self.pos})")
        c = self.layout[self.pos]
        self.pos += 1
        return c

    def take(self, source: str, n: int = 1) -> list[Any]:
        values, at = self.sources[source], self.at[source]
        if at + n > len(values):
            raise ValueError(
                f"{OP_NAME}: the layout of {self.name} asks for more {source} than the "
                f"{len(values)} given"
            )
        self.at[source] = at + n
        return list(values[at : at + n])

    def value(self) -> Any:
        code = self.code()
        if code == _NONE:
            return None
        if code == _FLOAT:
            return float(self.take("floats")[0])
        if code == _BOOL:
            return bool(self.code())
        if code == _INT:
            high, low = self.take("ints", 2)
            return int(high) * 2**32 + int(low)
        if code == _TENSOR:
            return self.take("tensors")[0]
        if code in (_NUM_LIST, _NUM_TUPLE):
            values = [float(x) for x in self.take("floats", self.code())]
            return tuple(values) if code == _NUM_TUPLE else values
        if code == _DTYPE:
            return _dtypes()[self.code()]
        if code == _DTYPES:
            return [_dtypes()[self.code()] for _ in range(self.code())]
        if code == _STR:
            return "".join(chr(self.code()) for _ in range(self.code()))
        if code in (_WRITTEN, _READ):
            return self.entries(self.code(), "written" if code == _WRITTEN else "read")
        if code == _CALLABLE:
            index = self.code()
            fn = _CALLABLES[index]() if 0 <= index < len(_CALLABLES) else None
            if fn is None:
                raise ValueError(
                    f"{OP_NAME}: {self.name} names callable {index}, which this process has not "
                    f"traced or which no longer exists (a program compiled in another process, "
                    f"or for an optimizer since deleted: compile it again)"
                )
            return fn
        raise ValueError(f"{OP_NAME}: unknown layout code {code} for {self.name}")

    def entries(self, n: int, source: str) -> list[Any]:
        out: list[Any] = []
        for i in range(n):
            code = self.code()
            if code == _E_TENSOR:
                out.append(self.take(source)[0])
            elif code == _E_NONE:
                out.append(None)
            elif code == _E_FRESH:
                self.fresh.append((out, i, self.take("written")[0]))
                out.append(None)  # created by the function, as on a first eager step
            elif code == _E_LIST:
                out.append(self.entries(self.code(), source))
            else:
                raise ValueError(f"{OP_NAME}: unknown entry code {code} for {self.name}")
        return out

    def check_consumed(self) -> None:
        left = [s for s, values in self.sources.items() if self.at[s] != len(values)]
        if self.pos != len(self.layout) or left:
            raise ValueError(
                f"{OP_NAME}: the layout of {self.name} does not match its arguments (layout "
                f"{self.pos} of {len(self.layout)} read; unused: {', '.join(left) or 'none'})"
            )


def _run(
    name: str,
    written: list[Any],
    read: list[Any],
    floats: list[float],
    ints: list[int],
    tensors: list[Any],
    layout: list[int],
) -> None:
    """The op at run time: rebuild the call and run the eager function on the real tensors."""
    if name not in _REGISTRY:
        raise KeyError(f"{OP_NAME}: no gradfuse function named {name!r} is registered")
    fn, params, _, _ = _REGISTRY[name]
    if layout[:1] == [_REAL_VIEWS]:  # recorded by record_real_views
        # The optimizers' own helper (new state, filled in after the call, is written through
        # its view too); imported here: gradfuse.optim imports this module.
        from gradfuse.optim._torch_compat import real_views

        layout = layout[1:]
        written, read = real_views(written), real_views(read)
    sources = {"written": written, "read": read, "floats": floats, "ints": ints, "tensors": tensors}
    reader = _Reader(name, sources, layout)
    kwargs: dict[str, Any] = {}
    for p in params:
        if reader.pos < len(layout) and layout[reader.pos] == _ABSENT:
            reader.pos += 1
            continue
        kwargs[p] = reader.value()
    reader.check_consumed()
    fn(**kwargs)
    # State the eager function created (first step): copy it into the tensors the traced
    # program allocated for it. None: the function created nothing (an AMP-skipped step);
    # zeros then, not uninitialised memory (see the module docstring).
    for values, i, target in reader.fresh:
        if values[i] is None:
            target.zero_()
        else:
            target.copy_(values[i])


_DEFINED: set[str] = set()  # the ops defined so far


def _define_ops() -> None:
    """Define ``gradfuse::fused_update_`` (and its functional form ``gradfuse::fused_update``),
    ``gradfuse::total_norm``, ``gradfuse::scale_grads_`` and ``gradfuse::quantize_blockwise8``
    (torch imported here). Never called while tracing: dynamo would trace into the definition."""
    import torch

    # The schemas are spelled out: annotations are strings here (``from __future__``).
    @torch.library.custom_op(OP_NAME, mutates_args=("written",), schema=_SCHEMA)
    def fused_update_(
        name: str,
        written: list[torch.Tensor],
        read: list[torch.Tensor],
        floats: list[float],
        ints: list[int],
        tensors: list[torch.Tensor],
        layout: list[int],
    ) -> None:
        _run(name, written, read, floats, ints, tensors, layout)

    @fused_update_.register_fake
    def _(*args: Any, **kwargs: Any) -> None:
        # The op's arguments; in-place on `written`, no outputs: nothing to describe but the
        # mutation (which the schema declares).
        return None

    @torch.library.custom_op(FUNCTIONAL_OP, mutates_args=(), schema=_FUNCTIONAL_SCHEMA)
    def fused_update(name: str, written: list[torch.Tensor], *operands: Any) -> list[torch.Tensor]:
        # fused_update_ (the operands after `written` as there) on copies of `written`, which
        # it returns: outputs may not alias an input.
        new = [t.clone() for t in written]
        _run(name, new, *operands)
        return new

    @fused_update.register_fake
    def _(name: str, written: list[torch.Tensor], *args: Any) -> list[torch.Tensor]:
        return [torch.empty_like(t) for t in written]

    @torch.library.custom_op(NORM_OP, mutates_args=(), schema=_NORM_SCHEMA)
    def total_norm(op: str, grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
        from gradfuse import _clip

        # A copy: the eager total is a view of the native call's output, and an op's output
        # must not alias anything.
        return _clip.total_norm(op, grads, norm_type).clone()

    @total_norm.register_fake
    def _(op: str, grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
        from gradfuse import _clip

        return grads[0].new_empty((), dtype=_clip.norm_dtype(grads))

    @torch.library.custom_op(SCALE_OP, mutates_args=("grads",), schema=_SCALE_SCHEMA)
    def scale_grads_(grads: list[torch.Tensor], clip_coef: torch.Tensor) -> None:
        from gradfuse import _clip

        _clip.scale_grads_(grads, clip_coef)

    @scale_grads_.register_fake
    def _(grads: list[torch.Tensor], clip_coef: torch.Tensor) -> None:
        return None

    @torch.library.custom_op(QUANTIZE_OP, mutates_args=(), schema=_QUANTIZE_SCHEMA)
    def quantize_blockwise8(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from gradfuse.optim import _quant8

        return _quant8.quantize_blockwise(x, signed)  # new tensors: no alias of x

    @quantize_blockwise8.register_fake
    def _(x: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from gradfuse.optim import _quant8

        # As the eager function allocates them: codes in x's memory order (see _in_memory_order).
        codes = torch.empty_like(_quant8._in_memory_order(x), dtype=torch.uint8)
        return codes, x.new_empty(_quant8.blocks(x.numel()), dtype=torch.float32)


def register_ops() -> None:
    """Define the custom ops once (called where torch is imported anyway: gradfuse.optim, and
    gradfuse.functional when torch is already loaded), so that tracing never defines them."""
    if OP_NAME not in _DEFINED:
        _define_ops()
        _DEFINED.update((OP_NAME, FUNCTIONAL_OP, NORM_OP, SCALE_OP, QUANTIZE_OP))
