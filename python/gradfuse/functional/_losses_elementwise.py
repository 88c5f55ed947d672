"""Fused loss + gradient for the elementwise losses, on numpy arrays and torch tensors.

``<name>_with_grad(input, target, ...) -> (loss, grad)`` computes torch.nn.functional.<name>'s
value and dloss/dinput in one native pass (src/cpu/kernels/losses_elementwise.cpp,
cuda/losses_elementwise.cu; the per-element rules and their derivations are in
src/gradfuse/math/losses_elementwise.h). No autograd is involved: ``grad`` is the gradient of the
returned loss (for ``reduction='none'``, of the sum of its elements).

The gradient goes into a new array unless ``out=`` names one; ``out=input`` (explicit opt-in)
overwrites the input with its gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gradfuse import _buffers, _native
from gradfuse.functional._losses_buffers import empty_grad

# Loss codes of gf::math::ElementwiseLoss (src/gradfuse/math/losses_elementwise.h).
KIND_CODES: dict[str, int] = {
    "mse_loss": 0,
    "l1_loss": 1,
    "smooth_l1_loss": 2,
    "huber_loss": 3,
    "binary_cross_entropy_with_logits": 4,
    "kl_div": 5,
}
# Losses whose gradient with respect to target is minus the one with respect to input.
TARGET_GRAD_IS_NEGATED = frozenset({"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"})
# Losses whose weighted 'mean' divides by sum(weight), as torch's do (huber_loss's divides by
# the element count).
_MEAN_DIVIDES_BY_WEIGHT_SUM = frozenset({"mse_loss", "l1_loss"})

_REDUCTIONS = ("none", "mean", "sum")
_SUPPORTED = ("float32", "float64", "float16", "bfloat16")


@dataclass
class Result:
    """What one native call produced, before the gradient is reduced to the input's shape."""

    loss: Any
    grad: Any  # dloss/dinput in the broadcast shape (None when not requested)
    shape: tuple[int, ...]  # the broadcast shape
    input_shape: tuple[int, ...]
    target_shape: tuple[int, ...]


def is_torch(x: object) -> bool:
    return _buffers._is_torch_tensor(x)


def _dtype_name(x: Any) -> str:
    if is_torch(x):
        return str(x.dtype).removeprefix("torch.")
    return str(x.dtype.name)


def _broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        import numpy as np

        return tuple(int(s) for s in np.broadcast_shapes(*shapes))
    except ValueError:
        described = " and ".join(str(s) for s in shapes)
        raise RuntimeError(f"{op}: shapes {described} cannot be broadcast together") from None


def _dense(x: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """``x`` broadcast to ``shape``, cast to ``dtype``, as a C-contiguous array (no copy when it
    already is one)."""
    if is_torch(x):
        y = x.detach()
        if y.dtype != dtype:
            y = y.to(dtype)
        if tuple(y.shape) != shape:
            y = y.expand(shape)
        if y.numel() == 0:  # an empty expansion keeps stride 0: give it a plain layout
            return y.new_empty(shape)
        return y.contiguous()
    import numpy as np

    y = np.asarray(x)
    if y.dtype != dtype:
        y = y.astype(dtype)
    if tuple(y.shape) != shape:
        y = np.broadcast_to(y, shape)
    if y.size == 0:
        return np.empty(shape, dtype=y.dtype)
    return np.ascontiguousarray(y)


def _empty(ref: Any, shape: tuple[int, ...]) -> Any:
    if is_torch(ref):
        import torch

        return torch.empty(shape, dtype=ref.dtype, device=ref.device)
    import numpy as np

    return np.empty(shape, dtype=ref.dtype)


def sum_to_shape(g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a broadcast gradient back to ``shape`` (the adjoint of broadcasting)."""
    if tuple(g.shape) == shape:
        return g
    if is_torch(g):
        return g.sum_to_size(shape) if shape else g.sum()
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1
    )
    return g.sum(axis=axes, keepdims=True).reshape(shape)


# torch refuses these operand kinds although type promotion would give a float (its forward;
# each error is torch's, see _torch_error): l1 subtracts (no bool subtraction); huber writes
# into an output of the input's dtype (a float cannot be cast to an integer input); BCE with
# logits takes log_sigmoid of the input (no integer kernel) and computes (1 - target) * input
# in the target's dtype; kl_div refuses integral operands outright.
_NO_BOOL_INPUT = frozenset({"l1_loss"})
_NO_BOOL_TARGET = frozenset({"l1_loss"})
_NO_INTEGRAL_INPUT = frozenset({"huber_loss", "binary_cross_entropy_with_logits", "kl_div"})
_NO_INTEGRAL_TARGET = frozenset({"binary_cross_entropy_with_logits", "kl_div"})


def _kind(x: Any) -> str:
    """'bool', 'integral' or 'other' (floating point, complex, anything else)."""
    name = _dtype_name(x)
    if name == "bool":
        return "bool"
    return "integral" if name.startswith(("int", "uint")) else "other"


def _torch_refuses(op: str, input: Any, target: Any) -> bool:
    """Whether torch's forward refuses this loss for these operand kinds."""
    ki, kt = _kind(input), _kind(target)
    return (
        (op in _NO_BOOL_INPUT and ki == "bool")
        or (op in _NO_BOOL_TARGET and kt == "bool")
        or (op in _NO_INTEGRAL_INPUT and ki != "other")
        or (op in _NO_INTEGRAL_TARGET and kt != "other")
    )


class DtypeRefusedError(TypeError, RuntimeError):
    """Operand dtypes a loss refuses: torch's RuntimeError (its message) and a TypeError."""


def _torch_error(
    op: str, input: Any, target: Any, pos_weight: Any, reduction: str, log_target: bool
) -> Any:
    """torch's own error for these operand dtypes, or None where torch computes them.

    torch's aten op (the one torch.nn.functional's loss calls) runs on one-element operands of
    the same dtypes and device, so the error type and message are exactly torch's, the device's
    kernel name included. Only on the error path: a dtype pair gradfuse refuses. The aten op,
    not torch.nn.functional's: a program that patched F.<loss> with gradfuse's would otherwise
    come back here. Weights are left out where torch applies them by Python arithmetic after
    the op (mse, l1, huber), which promotes any dtype."""
    import torch

    def one(x: Any) -> Any:
        return None if x is None else torch.zeros(1, dtype=x.dtype, device=x.device)

    x, t = one(input), one(target)
    # torch's Reduction enum (the reduction of an integer loss may be what fails); 'batchmean'
    # is kl_div's sum, divided in Python.
    red = {"none": 0, "mean": 1, "sum": 2, "batchmean": 2}[reduction]
    aten = torch.ops.aten
    calls = {
        "mse_loss": lambda: aten.mse_loss(x, t, red),
        "l1_loss": lambda: aten.l1_loss(x, t, red),
        "smooth_l1_loss": lambda: aten.smooth_l1_loss(x, t, red, 1.0),
        "huber_loss": lambda: aten.huber_loss(x, t, red, 1.0),
        "binary_cross_entropy_with_logits": lambda: aten.binary_cross_entropy_with_logits(
            x, t, None, one(pos_weight), red
        ),
        "kl_div": lambda: aten.kl_div(x, t, red, log_target=log_target),
    }
    try:
        with torch.no_grad():
            calls[op]()
    except Exception as e:  # noqa: BLE001 - whatever torch raises is the answer
        return e
    return None


def _promote_all(like: Any, dtypes: list[Any]) -> Any:
    """torch's (or numpy's, for arrays) type promotion of ``dtypes``."""
    if is_torch(like):
        import torch

        out = dtypes[0]
        for d in dtypes[1:]:
            out = torch.promote_types(out, d)
        return out
    import numpy as np

    return np.result_type(*dtypes)


def _promote(
    op: str,
    input: Any,
    target: Any,
    weight: Any,
    pos_weight: Any,
    reduction: str,
    log_target: bool,
) -> Any:
    """The dtype the loss is computed in: every operand's dtype promoted together (torch's /
    numpy's rules), so no operand loses precision before the one rounding to the result dtype.
    A combination torch refuses is refused with torch's error (numpy arrays: a TypeError)."""
    operands = [x for x in (input, target, weight, pos_weight) if x is not None]
    dtype = _promote_all(input, [x.dtype for x in operands])
    name = str(dtype).removeprefix("torch.") if is_torch(input) else dtype.name
    refused = _torch_refuses(op, input, target)
    if refused or name not in _SUPPORTED:
        pair = f"input ({_buffers.describe(input)}) and target ({_buffers.describe(target)})"
        if is_torch(input):
            err = _torch_error(op, input, target, pos_weight, reduction, log_target)
            if type(err) is RuntimeError:
                # torch's message, for the drop-ins; a TypeError too, naming the operands, as
                # gradfuse's own functions refuse a dtype (`except TypeError` keeps working).
                refused_err = DtypeRefusedError(str(err))
                refused_err.add_note(f"gradfuse {op}: {pair}: expected floating-point operands")
                raise refused_err
            if err is not None:
                raise err
        if refused:
            raise TypeError(
                f"{op}: {pair}: torch's {op} refuses these dtypes too; expected floating-point "
                "operands"
            )
        raise TypeError(
            f"{op}: {pair} compute in {dtype}, which is not supported; expected "
            f"{_buffers.SUPPORTED_DTYPES}"
        )
    return dtype


def _result_dtype(op: str, input: Any, target: Any, weight: Any, compute: Any) -> Any:
    """The dtype torch's loss returns (torch 2.4+, forward): huber writes its elementwise loss
    into a tensor of the input's dtype (a weight then multiplies it, promoting); BCE with logits
    builds its loss from ``(1 - target)`` in place, in the target's dtype; the others return
    their operands' promoted dtype (mse / l1's weight multiplies in, promoting)."""
    if op == "huber_loss":
        return input.dtype if weight is None else _promote_all(input, [input.dtype, weight.dtype])
    if op == "binary_cross_entropy_with_logits":
        return target.dtype
    return compute


def _cast(x: Any, dtype: Any) -> Any:
    if x.dtype == dtype:
        return x
    return x.to(dtype) if is_torch(x) else x.astype(dtype)


def _check_pair(op: str, input: Any, other: Any, name: str = "target") -> None:
    """``other`` (the argument ``name``) is of input's kind (torch or numpy) and on its device."""
    for arg, x in (("input", input), (name, other)):
        if not (is_torch(x) or type(x).__module__ == "numpy"):
            raise TypeError(
                f"{op}: {arg} must be a torch.Tensor or numpy.ndarray, got {_buffers.describe(x)}"
            )
    if is_torch(input) != is_torch(other):
        raise TypeError(
            f"{op}: input ({_buffers.describe(input)}) and {name} ({_buffers.describe(other)}) "
            "must both be torch tensors or both numpy arrays"
        )
    if is_torch(input) and input.device != other.device:
        raise ValueError(
            f"{op}: input is on {input.device} but {name} is on {other.device}; expected the "
            "same device"
        )


def compute(
    op: str,
    input: Any,
    target: Any,
    *,
    reduction: str,
    weight: Any = None,
    pos_weight: Any = None,
    param: float = 0.0,
    log_target: bool = False,
    out: Any = None,
) -> Result:
    """One native pass of loss ``op`` (a key of KIND_CODES). Validates everything before writing.

    ``reduction`` is 'none', 'mean', 'sum' or (kl_div) 'batchmean'. The loss is computed in the
    promoted dtype of all operands and returned in torch's result dtype (``_result_dtype``).
    ``out``: the caller's ``out=`` (checked by ``check_out``: the input's shape, dtype and
    device, C-contiguous; it may be the input itself): the gradient is written straight into it
    when it needs no reduction over broadcast dimensions and no cast (``Result.grad is out``).
    """
    kind = KIND_CODES[op]
    _check_pair(op, input, target)
    for name, x in (("weight", weight), ("pos_weight", pos_weight)):
        if x is not None:
            _check_pair(op, input, x, name)
    allowed = (*_REDUCTIONS, "batchmean") if op == "kl_div" else _REDUCTIONS
    if reduction not in allowed:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    input_shape = tuple(int(s) for s in input.shape)
    target_shape = tuple(int(s) for s in target.shape)
    if op == "binary_cross_entropy_with_logits" and target_shape != input_shape:
        raise ValueError(
            f"Target size ({_size(target_shape)}) must be the same as input size "
            f"({_size(input_shape)})"
        )
    shape = _broadcast_shapes(op, input_shape, target_shape)
    dtype = _promote(op, input, target, weight, pos_weight, reduction, log_target)
    result_dtype = _result_dtype(op, input, target, weight, dtype)
    x = _dense(input, shape, dtype)
    y = _dense(target, shape, dtype)
    w = pw = None
    if weight is not None:
        if op in ("mse_loss", "l1_loss", "huber_loss") and tuple(weight.shape) != input_shape:
            raise ValueError("Weights and input must have the same size.")
        if _broadcast_shapes(op, tuple(weight.shape), shape) != shape:
            raise RuntimeError(
                f"{op}: weight of shape {tuple(weight.shape)} does not broadcast to the loss "
                f"shape {shape}"
            )
        w = _dense(weight, shape, dtype)
    if pos_weight is not None:
        if _broadcast_shapes(op, tuple(pos_weight.shape), shape) != shape:
            raise RuntimeError(
                f"{op}: pos_weight of shape {tuple(pos_weight.shape)} does not broadcast to the "
                f"target shape {shape}"
            )
        pw = _dense(pos_weight, shape, dtype)
    numel = math.prod(shape)
    if reduction in {"none", "sum"}:
        divisor = 1.0
    elif reduction == "batchmean":
        divisor = float(input_shape[0]) if input_shape else 1.0
    elif op in _MEAN_DIVIDES_BY_WEIGHT_SUM and w is not None:
        # torch divides by the weight's own sum, at the input's shape: where the target
        # broadcasts the input, the weight is not counted once per broadcast copy.
        divisor = float(_dense(weight, input_shape, dtype).sum(dtype=_float64_like(w)))
    else:
        divisor = float(numel)

    xb = _buffers.as_buffer(x, f"{op}: input", writable=False)
    yb = _buffers.as_buffer(y, f"{op}: target", writable=False)
    named = [("input", xb), ("target", yb)]
    wb = pwb = None
    if w is not None:
        wb = _buffers.as_buffer(w, f"{op}: weight", writable=False)
        named.append(("weight", wb))
    if pw is not None:
        pwb = _buffers.as_buffer(pw, f"{op}: pos_weight", writable=False)
        named.append(("pos_weight", pwb))
    # ``out`` has the input's shape and dtype (check_out): it takes the gradient as is when the
    # broadcast shape is the input's and the loss computes in the input's dtype.
    if out is not None and shape == input_shape and _dtype_name(x) == _dtype_name(input):
        grad = out
        gb_check = _buffers.as_buffer(grad, f"{op}: out", writable=True)
        _buffers.check_same_layout(xb, f"{op}: input (after broadcasting)", gb_check, "out")
        if gb_check.strides != xb.strides:
            raise ValueError(
                f"{op}: out must be C-contiguous (got strides {gb_check.strides} for shape "
                f"{gb_check.shape})"
            )
    else:
        grad = empty_grad(x, shape) if is_torch(x) else _empty(x, shape)
    gb = _buffers.as_buffer(grad, f"{op}: grad", writable=True)
    loss = _empty(x, shape if reduction == "none" else ())
    lb = _buffers.as_buffer(loss, f"{op}: loss", writable=True)
    # The gradient buffer may be the input itself (explicit opt-in: out=input), never anything
    # else that the call reads.
    others = [(n, b) for n, b in named if not (n == "input" and b.ptr == gb.ptr)]
    _buffers.check_no_overlap([*others, ("out", gb)], {"out"})

    device = xb.device
    stream = 0
    if device >= 0:
        import torch

        stream = int(torch.cuda.current_stream(device).cuda_stream)
    _native.core().elementwise_loss(
        kind,
        xb.dtype_code,
        device,
        stream,
        numel,
        input=xb.ptr,
        target=yb.ptr,
        weight=0 if wb is None else wb.ptr,
        pos_weight=0 if pwb is None else pwb.ptr,
        grad=gb.ptr,
        loss=lb.ptr,
        reduction=0 if reduction == "none" else 1,
        divisor=divisor,
        param=float(param),
        log_target=bool(log_target),
    )
    # One rounding, from the promoted dtype to torch's result dtype (huber: the input's, BCE:
    # the target's), after the reduction.
    return Result(_cast(loss, result_dtype), grad, shape, input_shape, target_shape)


def _is_c_contiguous(x: Any) -> bool:
    if is_torch(x):
        return bool(x.is_contiguous())
    return bool(x.flags.c_contiguous)


def _size(shape: tuple[int, ...]) -> str:
    return f"torch.Size({list(shape)})"


def _float64_like(x: Any) -> Any:
    if is_torch(x):
        import torch

        return torch.float64
    import numpy as np

    return np.float64


def check_positive(op: str, name: str, value: float, allow_zero: bool) -> None:
    """torch's checks of beta (smooth_l1: >= 0) and delta (huber: > 0), written as torch writes
    them: a NaN fails the comparison, so torch refuses it with the same message."""
    if allow_zero and not value >= 0:
        raise RuntimeError(f"{op} does not support negative values for {name}.")
    if not allow_zero and not value > 0:
        raise RuntimeError(f"{op} does not support non-positive values for {name}.")


def check_out(op: str, input: Any, out: Any) -> None:
    """``out=`` of a ``*_with_grad`` call receives dloss/dinput, which has the input's shape and
    dtype: it must have them, be on the input's device and be C-contiguous. Refused before
    anything is written, as the softmax losses refuse it, rather than cast or re-laid silently."""
    _check_pair(op, input, out, "out")
    ob = _buffers.as_buffer(out, f"{op}: out", writable=True)
    if tuple(out.shape) != tuple(input.shape):
        raise ValueError(
            f"{op}: out has shape {tuple(out.shape)} but input has shape "
            f"{tuple(input.shape)}; expected the same shape"
        )
    if _dtype_name(out) != _dtype_name(input):
        raise TypeError(
            f"{op}: out has dtype {_dtype_name(out)} but input has dtype {_dtype_name(input)}; "
            "expected the same dtype (the gradient is the input's dtype)"
        )
    if not _is_c_contiguous(out):
        raise ValueError(f"{op}: out must be C-contiguous, got strides {ob.strides}")


def _finish(r: Result, input: Any, out: Any) -> tuple[Any, Any]:
    """Reduce the gradient to the input's shape and dtype (into ``out`` when given)."""
    g = sum_to_shape(r.grad, r.input_shape)
    g = _cast(g, input.dtype)
    if out is not None and g is not out:
        if is_torch(out):
            out.copy_(g)
        else:
            import numpy as np

            np.copyto(out, g)
        g = out
    return r.loss, g


def _with_grad(
    op: str, input: Any, target: Any, out: Any, reduction: str, **kw: Any
) -> tuple[Any, Any]:
    if out is not None:
        check_out(op, input, out)
    r = compute(op, input, target, reduction=reduction, out=out, **kw)
    return _finish(r, input, out)


def mse_loss_with_grad(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    weight: Any = None,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.mse_loss`` and its gradient with respect to ``input``.

    ``weight`` (same shape as input): per-element weights; 'mean' then divides by
    ``sum(weight)``, as torch does.
    """
    return _with_grad("mse_loss", input, target, out, reduction, weight=weight)


def l1_loss_with_grad(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    weight: Any = None,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.l1_loss`` and its gradient (sign(input - target), 0 at a tie)."""
    return _with_grad("l1_loss", input, target, out, reduction, weight=weight)


def smooth_l1_loss_with_grad(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    beta: float = 1.0,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.smooth_l1_loss`` and its gradient; ``beta=0`` is the L1 loss."""
    check_positive("smooth_l1_loss", "beta", beta, allow_zero=True)
    if beta == 0.0:
        return _with_grad("l1_loss", input, target, out, reduction)
    return _with_grad("smooth_l1_loss", input, target, out, reduction, param=beta)


def huber_loss_with_grad(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Any = None,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.huber_loss`` and its gradient (``weight``: 'mean' divides by N)."""
    check_positive("huber_loss", "delta", delta, allow_zero=False)
    return _with_grad("huber_loss", input, target, out, reduction, param=delta, weight=weight)


def binary_cross_entropy_with_logits_with_grad(
    input: Any,
    target: Any,
    *,
    weight: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.binary_cross_entropy_with_logits`` and its gradient.

    Stable log-sigmoid form; ``weight`` and ``pos_weight`` broadcast to the input's shape.
    """
    return _with_grad(
        "binary_cross_entropy_with_logits",
        input,
        target,
        out,
        reduction,
        weight=weight,
        pos_weight=pos_weight,
    )


def kl_div_with_grad(
    input: Any,
    target: Any,
    *,
    reduction: str = "mean",
    log_target: bool = False,
    out: Any = None,
) -> tuple[Any, Any]:
    """``torch.nn.functional.kl_div`` (input: log-probabilities) and its gradient.

    ``reduction='batchmean'`` divides the sum by ``input.shape[0]``; 'mean' by the element
    count (torch's semantics, without its warning: this layer is not torch's API).
    """
    return _with_grad("kl_div", input, target, out, reduction, log_target=log_target)
