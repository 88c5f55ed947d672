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


# Input dtypes torch refuses for a loss although promotion with the target would give a float:
# huber (its output cannot be cast back to an integer input), BCE with logits (no integer
# log_sigmoid) and kl_div refuse integer and bool inputs; l1 refuses bool (no bool subtraction).
_NO_INTEGRAL_INPUT = frozenset({"huber_loss", "binary_cross_entropy_with_logits", "kl_div"})
_NO_BOOL_INPUT = frozenset({"l1_loss"}) | _NO_INTEGRAL_INPUT


def _check_input_kind(op: str, input: Any) -> None:
    name = str(input.dtype).removeprefix("torch.")
    is_bool = name == "bool"
    integral = is_bool or name.startswith(("int", "uint"))
    if (op in _NO_BOOL_INPUT and is_bool) or (op in _NO_INTEGRAL_INPUT and integral):
        raise TypeError(
            f"{op}: input has dtype {input.dtype} ({_buffers.describe(input)}), which torch's "
            f"{op} refuses too; expected a floating-point input"
        )


def _promote(op: str, input: Any, target: Any) -> Any:
    """The dtype both operands are computed in (torch's / numpy's type promotion)."""
    _check_input_kind(op, input)
    dtype: Any
    if is_torch(input):
        import torch

        dtype = torch.promote_types(input.dtype, target.dtype)
    else:
        import numpy as np

        dtype = np.result_type(input.dtype, target.dtype)
    name = str(dtype).removeprefix("torch.") if is_torch(input) else dtype.name
    if name not in _SUPPORTED:
        raise TypeError(
            f"{op}: input ({_buffers.describe(input)}) and target ({_buffers.describe(target)}) "
            f"compute in {dtype}, which is not supported; expected {_buffers.SUPPORTED_DTYPES}"
        )
    return dtype


def _check_pair(op: str, input: Any, target: Any) -> None:
    for name, x in (("input", input), ("target", target)):
        if not (is_torch(x) or type(x).__module__ == "numpy"):
            raise TypeError(
                f"{op}: {name} must be a torch.Tensor or numpy.ndarray, got {_buffers.describe(x)}"
            )
    if is_torch(input) != is_torch(target):
        raise TypeError(
            f"{op}: input ({_buffers.describe(input)}) and target ({_buffers.describe(target)}) "
            "must both be torch tensors or both numpy arrays"
        )
    if is_torch(input) and input.device != target.device:
        raise ValueError(
            f"{op}: input is on {input.device} but target is on {target.device}; expected the "
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
    grad_out: Any = None,
) -> Result:
    """One native pass of loss ``op`` (a key of KIND_CODES). Validates everything before writing.

    ``reduction`` is 'none', 'mean', 'sum' or (kl_div) 'batchmean'. ``grad_out``: an array of
    the broadcast shape to receive the gradient (it may be the input itself).
    """
    kind = KIND_CODES[op]
    _check_pair(op, input, target)
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
    dtype = _promote(op, input, target)
    x = _dense(input, shape, dtype)
    y = _dense(target, shape, dtype)
    w = pw = None
    if weight is not None:
        _check_pair(op, input, weight)
        if op in ("mse_loss", "l1_loss", "huber_loss") and tuple(weight.shape) != input_shape:
            raise ValueError("Weights and input must have the same size.")
        if _broadcast_shapes(op, tuple(weight.shape), shape) != shape:
            raise RuntimeError(
                f"{op}: weight of shape {tuple(weight.shape)} does not broadcast to the loss "
                f"shape {shape}"
            )
        w = _dense(weight, shape, dtype)
    if pos_weight is not None:
        _check_pair(op, input, pos_weight)
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
    if grad_out is None:
        grad = empty_grad(x, shape) if is_torch(x) else _empty(x, shape)
    else:
        grad = grad_out
        gb_check = _buffers.as_buffer(grad, f"{op}: out", writable=True)
        _buffers.check_same_layout(xb, f"{op}: input (after broadcasting)", gb_check, "out")
        if gb_check.strides != xb.strides:
            raise ValueError(
                f"{op}: out must be C-contiguous (got strides {gb_check.strides} for shape "
                f"{gb_check.shape})"
            )
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
    return Result(loss, grad, shape, input_shape, target_shape)


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
    """torch's checks of beta (smooth_l1: >= 0) and delta (huber: > 0)."""
    if allow_zero and value < 0:
        raise RuntimeError(f"{op} does not support negative values for {name}.")
    if not allow_zero and value <= 0:
        raise RuntimeError(f"{op} does not support non-positive values for {name}.")


def _finish(op: str, r: Result, input: Any, out: Any) -> tuple[Any, Any]:
    """Reduce the gradient to the input's shape and dtype (into ``out`` when given)."""
    g = sum_to_shape(r.grad, r.input_shape)
    if _dtype_name(g) != _dtype_name(input):
        g = g.to(input.dtype) if is_torch(g) else g.astype(input.dtype)
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
    # A gradient that needs no reduction or cast goes straight into ``out``.
    direct = (
        out is not None
        and tuple(out.shape) == tuple(input.shape)
        and _broadcast_shapes(op, tuple(input.shape), tuple(target.shape)) == tuple(input.shape)
        and _dtype_name(input) == _dtype_name(target)
        and _dtype_name(out) == _dtype_name(input)
        and _is_c_contiguous(out)
    )
    if out is not None:
        _buffers.as_buffer(out, f"{op}: out", writable=True)
        if tuple(out.shape) != tuple(input.shape):
            raise ValueError(
                f"{op}: out has shape {tuple(out.shape)} but input has shape "
                f"{tuple(input.shape)}; expected the same shape"
            )
    r = compute(op, input, target, reduction=reduction, grad_out=out if direct else None, **kw)
    return _finish(op, r, input, out)


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
