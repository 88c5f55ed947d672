"""torch.compile support: gradfuse's fused updates as one torch.library custom op.

TorchDynamo cannot trace into gradfuse's native calls (they hand raw data pointers to
``gradfuse._core``). So, while torch.compile traces, every function of
:mod:`gradfuse.functional` decorated with :func:`traceable` is recorded as ONE opaque call of
the custom op ``gradfuse::fused_update_`` instead: the graph keeps no break, inductor
schedules it like any other in-place op, and at run time the op calls the very same eager
function on the real tensors (same validation, same kernels, same results as eager).

The op is generic: its arguments are the name of the functional (``"sgd_"``, ``"adamw_"``, ...)
and that function's arguments flattened into typed lists (tensors updated in place, tensors
read, float scalars, tensor scalars) plus an integer ``layout`` saying how to put them back.
A new optimizer needs one line: ``@traceable(written=(...))`` on its functional, naming every
list the function updates in place (params, state, per-param step tensors if it keeps them);
its first argument must be ``params`` (new state is allocated like it).

State created on the first step (``momentum_buffers`` entries that are ``None``) is created
by the traced code with ``torch.empty_like`` (so it lands in the optimizer's state, as in
eager), passed to the op as written tensors, and filled by the op: the eager function runs
with ``None`` there, as on a first eager step, and its result is copied into the new tensor.

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
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., None])

# The functionals that can be recorded, by name: (function, its parameter names, written
# slots, predicate per slot telling whether its None entries are created by the function).
_REGISTRY: dict[str, tuple[Callable[..., None], tuple[str, ...], frozenset[str], Any]] = {}

# layout codes, one (code, length) pair per parameter of the functional, in signature order.
(
    _ABSENT,
    _NONE,
    _NONE_LIST,
    _WRITTEN,
    _READ,
    _FLOAT,
    _BOOL,
    _INT,
    _TENSOR,
    _NUM_LIST,
    _NUM_TUPLE,
) = range(11)

OP_NAME = "gradfuse::fused_update_"
_SCHEMA = (
    "(str name, Tensor(a!)[] written, Tensor[] read, float[] floats, Tensor[] tensors, "
    "int[] layout, int[] fresh) -> ()"
)


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
    list argument is read only. ``creates[name](kwargs)``: whether the function creates the
    ``None`` entries of written list ``name`` for these arguments (default: always).
    """

    def wrap(fn: F) -> F:
        name = fn.__name__
        params = tuple(inspect.signature(fn).parameters)
        _REGISTRY[name] = (fn, params, frozenset(written), dict(creates or {}))

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


def _record(name: str, bound: dict[str, Any]) -> None:
    """Flatten a traced call into the op's typed arguments and call the op."""
    import torch

    _, params, written_names, creates = _REGISTRY[name]
    written: list[Any] = []
    read: list[Any] = []
    floats: list[float] = []
    tensors: list[Any] = []
    layout: list[int] = []
    fresh: list[int] = []
    for p in params:
        v = bound.get(p)
        if p not in bound:
            layout += [_ABSENT, 0]  # left to its default
        elif v is None:
            layout += [_NONE, 0]
        elif isinstance(v, list | tuple) and p not in written_names and _numbers(v):
            # A list/tuple of numbers (e.g. betas): carried in `floats`, rebuilt as floats.
            floats.extend(float(x) for x in v)
            layout += [_NUM_TUPLE if isinstance(v, tuple) else _NUM_LIST, len(v)]
        elif isinstance(v, list | tuple):
            if p in written_names:
                make = creates.get(p)
                if make is not None and not make(bound) and any(t is None for t in v):
                    # The function does not use this slot for these arguments (e.g. SGD's
                    # momentum_buffers when momentum == 0): it gets the same list of None.
                    layout += [_NONE_LIST, len(v)]
                    continue
                for i, entry in enumerate(v):
                    t = entry
                    if t is None:  # state the function creates: allocate it here (see above)
                        t = torch.empty_like(bound["params"][i])
                        if isinstance(v, list):  # the caller's list gets the new state
                            v[i] = t
                        fresh.append(len(written))
                    written.append(t)
                layout += [_WRITTEN, len(v)]
            else:
                read.extend(v)
                layout += [_READ, len(v)]
        elif isinstance(v, torch.Tensor):
            tensors.append(v)
            layout += [_TENSOR, 1]
        elif isinstance(v, bool):
            floats.append(float(v))
            layout += [_BOOL, 1]
        elif isinstance(v, int):
            floats.append(float(v))
            layout += [_INT, 1]
        else:
            floats.append(float(v))
            layout += [_FLOAT, 1]
    if OP_NAME not in _DEFINED:
        raise RuntimeError(
            f"{name}: gradfuse's custom op is not defined yet; import gradfuse.optim (or call "
            f"gradfuse._compile.register_ops()) before torch.compile traces gradfuse functions"
        )
    torch.ops.gradfuse.fused_update_(name, written, read, floats, tensors, layout, fresh)


def _numbers(v: Sequence[Any]) -> bool:
    """A non-empty sequence of plain numbers (no tensors, no None)."""
    return len(v) > 0 and all(isinstance(x, int | float) and not hasattr(x, "data_ptr") for x in v)


def _run(
    name: str,
    written: list[Any],
    read: list[Any],
    floats: list[float],
    tensors: list[Any],
    layout: list[int],
    fresh: list[int],
) -> None:
    """The op at run time: rebuild the call and run the eager function on the real tensors."""
    if name not in _REGISTRY:
        raise KeyError(f"{OP_NAME}: no gradfuse function named {name!r} is registered")
    fn, params, _, _ = _REGISTRY[name]
    if len(layout) != 2 * len(params):
        raise ValueError(
            f"{OP_NAME}: layout has {len(layout)} entries; {name} takes {len(params)} "
            f"arguments, expected two entries (kind, length) each"
        )
    fresh_set = set(fresh)
    kwargs: dict[str, Any] = {}
    w = r = f = t = 0
    for k, p in enumerate(params):
        code, n = layout[2 * k], layout[2 * k + 1]
        if code == _NONE:
            kwargs[p] = None
        elif code == _NONE_LIST:
            kwargs[p] = [None] * n
        elif code == _WRITTEN:
            kwargs[p] = [None if w + i in fresh_set else written[w + i] for i in range(n)]
            w += n
        elif code == _READ:
            kwargs[p] = list(read[r : r + n])
            r += n
        elif code == _TENSOR:
            kwargs[p] = tensors[t]
            t += 1
        elif code in (_NUM_LIST, _NUM_TUPLE):
            values = [float(x) for x in floats[f : f + n]]
            kwargs[p] = tuple(values) if code == _NUM_TUPLE else values
            f += n
        elif code in (_FLOAT, _BOOL, _INT):
            kwargs[p] = {_FLOAT: float, _BOOL: bool, _INT: int}[code](floats[f])
            f += 1
    fn(**kwargs)
    # State the eager function created (first step): copy it into the tensors the traced
    # program allocated for it.
    w = 0
    for k, p in enumerate(params):
        code, n = layout[2 * k], layout[2 * k + 1]
        if code == _WRITTEN:
            for i in range(n):
                if w + i in fresh_set:
                    written[w + i].copy_(kwargs[p][i])
            w += n


_DEFINED: set[str] = set()  # the ops defined so far


def _define_ops() -> None:
    """Define ``gradfuse::fused_update_`` (torch imported here). Never called while tracing:
    dynamo would trace into the definition."""
    import torch

    # The schema is spelled out: annotations are strings here (``from __future__``).
    @torch.library.custom_op(OP_NAME, mutates_args=("written",), schema=_SCHEMA)
    def fused_update_(
        name: str,
        written: list[torch.Tensor],
        read: list[torch.Tensor],
        floats: list[float],
        tensors: list[torch.Tensor],
        layout: list[int],
        fresh: list[int],
    ) -> None:
        _run(name, written, read, floats, tensors, layout, fresh)

    @fused_update_.register_fake
    def _(*args: Any, **kwargs: Any) -> None:
        # The op's arguments; in-place on `written`, no outputs: nothing to describe but the
        # mutation (which the schema declares).
        return None


def register_ops() -> None:
    """Define the custom ops once (called where torch is imported anyway: gradfuse.optim, and
    gradfuse.functional when torch is already loaded), so that tracing never defines them."""
    if OP_NAME not in _DEFINED:
        _define_ops()
        _DEFINED.add(OP_NAME)
