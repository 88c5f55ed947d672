"""Softmax losses with their gradient in one native pass: cross entropy and negative log-likelihood.

``cross_entropy_with_grad`` / ``nll_loss_with_grad`` follow ``torch.nn.functional.cross_entropy``
/ ``nll_loss`` exactly (shapes, options, reductions, errors) and return ``(loss, grad)`` where
``grad`` is dloss/dinput. They take numpy arrays (CPU) or torch tensors (CPU, or CUDA when
gradfuse was built with it). The gradient goes to a new buffer unless ``out=`` names one (which
may be ``input`` itself: the logits are then overwritten, only when asked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gradfuse import _buffers, _native
from gradfuse._buffers import Buffer
from gradfuse.functional._losses_buffers import empty_grad

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
# Weights torch's probability-target cross_entropy promotes with the input (input * target *
# weight): every real dtype.
_REAL_WEIGHT_DTYPES = frozenset(
    {
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
    }
)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


@dataclass
class _Plan:
    """A validated call: the native arguments plus how to shape the results."""

    input: Buffer
    target: Buffer
    weight: Any  # the class weights in the compute type (an array/tensor), or None
    outer: int
    classes: int
    inner: int
    prob_target: bool
    loss_shape: tuple[int, ...]  # () for mean/sum


def _is_float_dtype(dtype_name: str) -> bool:
    return dtype_name in _buffers.DTYPE_CODES


def _dtype_name(x: Any) -> str:
    return str(getattr(x, "dtype", type(x).__name__)).removeprefix("torch.")


def _torch_type_name(dtype_name: str) -> str:
    """torch's ScalarType name of a dtype (as in its error messages)."""
    names = {
        "float32": "Float",
        "float64": "Double",
        "float16": "Half",
        "bfloat16": "BFloat16",
        "int64": "Long",
        "int32": "Int",
        "int16": "Short",
        "int8": "Char",
        "uint8": "Byte",
        "bool": "Bool",
    }
    return names.get(dtype_name, dtype_name)


def _check_reduction(reduction: Any) -> int:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    return REDUCTIONS[reduction]


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _as_int64_target(target: Any, input_dim: int, weighted_smoothed_mean: bool = False) -> Any:
    """Class-index targets as int64. torch takes Byte targets only where its kernel reads them
    as they are: nll_loss for 1-D and 2-D inputs. Its 2-D spatial kernel (any input of 3 or more
    dims) asks for Long, and cross_entropy's label-smoothed weighted 'mean' gathers the target
    classes' weights with the targets as an index, which must be int32/int64."""
    name = _dtype_name(target)
    if name == "int64":
        return target
    if name == "uint8":
        if input_dim >= 3:
            raise RuntimeError("expected scalar type Long but found Byte")
        if weighted_smoothed_mean:
            raise RuntimeError("gather(): Expected dtype int32/int64 for index")
        return target.long() if _buffers._is_torch_tensor(target) else target.astype("int64")
    raise RuntimeError(
        f"expected target dtype to be Long or Byte, but got {_torch_type_name(name)}"
    )


def _class_target_layout(
    op: str, in_shape: tuple[int, ...], t_shape: tuple[int, ...]
) -> tuple[int, int, int, tuple[int, ...]]:
    """torch's nll_loss_nd shape rules; returns (outer, classes, inner, per-row loss shape)."""
    dim = len(in_shape)
    if dim < 1:
        raise ValueError(f"Expected 1 or more dimensions (got {dim})")
    if dim != 1 and (len(t_shape) == 0 or in_shape[0] != t_shape[0]):
        got = t_shape[0] if t_shape else 0
        raise ValueError(
            f"Expected input batch_size ({in_shape[0]}) to match target batch_size ({got})."
        )
    if dim == 1:
        if len(t_shape) > 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        if len(t_shape) == 1 and t_shape[0] != 1:
            raise ValueError(
                f"For 1D input, 1D target must have size 1, but got target size: {t_shape[0]}"
            )
        return 1, in_shape[0], 1, ()
    if dim == 2:
        if len(t_shape) != 1:
            raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
        return in_shape[0], in_shape[1], 1, (in_shape[0],)
    if dim == 4:
        if len(t_shape) != 3:
            raise RuntimeError(
                "only batches of spatial targets supported (3D tensors) but got targets of "
                f"dimension: {len(t_shape)}"
            )
        if t_shape[1:] != in_shape[2:]:
            raise RuntimeError(
                f"size mismatch (got input: {_fmt_shape(in_shape)} , target: {_fmt_shape(t_shape)}"
            )
    else:
        out_size = (in_shape[0], *in_shape[2:])
        if t_shape[1:] != in_shape[2:]:
            raise RuntimeError(
                f"Expected target size {_fmt_shape(out_size)}, got {_fmt_shape(t_shape)}"
            )
    inner = 1
    for s in in_shape[2:]:
        inner *= s
    return in_shape[0], in_shape[1], inner, (in_shape[0], *in_shape[2:])


def _prepare_weight(op: str, weight: Any, inp: Buffer, classes: int, prob: bool) -> Any:
    """Class weights as a contiguous array in the input's compute type, on its device."""
    if weight is None:
        return None
    wshape = _shape(weight)
    if len(wshape) != 1 or wshape[0] != classes:
        prefix = "cross_entropy: " if prob else ""
        raise RuntimeError(
            f"{prefix}weight tensor should be defined either for all {classes} classes or no "
            f"classes but got weight tensor of shape: {_fmt_shape(wshape)}"
        )
    wname = _dtype_name(weight)
    # Class-index targets: torch's nll kernel asks for the input's dtype. Probability targets:
    # torch multiplies by the weight, promoting any real dtype (float64, even an integer one);
    # here it is cast to the compute type below like every other weight.
    if wname != inp.dtype and not (prob and wname in _REAL_WEIGHT_DTYPES):
        raise RuntimeError(
            f"expected scalar type {_torch_type_name(inp.dtype)} but found "
            f"{_torch_type_name(wname)}"
        )
    compute = "float64" if inp.dtype == "float64" else "float32"
    if not _is_float_dtype(wname):
        # An integer or bool weight (probability targets): in the compute type first, so that
        # the device and kind checks below can read it as a buffer.
        if _buffers._is_torch_tensor(weight):
            import torch

            weight = weight.detach().to(getattr(torch, compute))
        else:
            weight = weight.astype(compute)
    wb = _buffers.as_buffer(weight, f"{op}: weight", writable=False)
    if wb.device != inp.device or wb.is_torch != inp.is_torch:
        raise ValueError(
            f"{op}: weight ({wb.describe()}) must be on the same device and of the same kind as "
            f"input ({inp.describe()})"
        )
    if inp.is_torch:
        import torch

        return weight.detach().to(dtype=getattr(torch, compute)).contiguous()
    import numpy as np

    return np.ascontiguousarray(weight, dtype=compute)


def _plan(
    op: str,
    input: Any,
    target: Any,
    weight: Any,
    ignore_index: int,
    label_smoothing: float,
    allow_prob: bool,
    reduction: str,
) -> _Plan:
    for name, x in (("input", input), ("target", target), ("weight", weight)):
        if x is not None and not (_buffers._is_torch_tensor(x) or _is_ndarray(x)):
            raise TypeError(
                f"{op}: {name} must be a torch.Tensor or numpy.ndarray, got {_buffers.describe(x)}"
            )
    input = _contiguous(input)
    inp = _buffers.as_buffer(input, f"{op}: input", writable=False)
    in_shape = inp.shape
    t_shape = _shape(target)
    prob = allow_prob and t_shape == in_shape
    if prob:
        tname = _dtype_name(target)
        if not _is_float_dtype(tname):
            raise RuntimeError(
                "Expected floating point type for target with class probabilities, got "
                f"{_torch_type_name(tname)}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
        if tname != inp.dtype:
            # torch promotes the two; gradfuse computes in the input's dtype.
            target = target.to(input.dtype) if inp.is_torch else target.astype(input.dtype)
        tb = _buffers.as_buffer(_contiguous(target), f"{op}: target", writable=False)
        if len(in_shape) == 0:
            raise ValueError("Expected 1 or more dimensions (got 0)")
        classes = in_shape[0] if len(in_shape) == 1 else in_shape[1]
        outer = 1 if len(in_shape) == 1 else in_shape[0]
        inner = 1
        for s in in_shape[2:]:
            inner *= s
        loss_shape = () if len(in_shape) == 1 else (in_shape[0], *in_shape[2:])
    else:
        if len(in_shape) == 0:
            if op == "cross_entropy":
                raise RuntimeError(
                    "Expected floating point type for target with class probabilities, got "
                    f"{_torch_type_name(_dtype_name(target))}"
                )
            raise ValueError("Expected 1 or more dimensions (got 0)")
        outer, classes, inner, loss_shape = _class_target_layout(op, in_shape, t_shape)
        target = _as_int64_target(
            target,
            len(in_shape),
            weighted_smoothed_mean=op == "cross_entropy"
            and label_smoothing > 0.0
            and weight is not None
            and reduction == "mean",
        )
        tb = _index_buffer(_contiguous(target), f"{op}: target")
    if tb.device != inp.device or tb.is_torch != inp.is_torch:
        raise ValueError(
            f"{op}: target ({tb.describe()}) must be on the same device and of the same kind as "
            f"input ({inp.describe()})"
        )
    w = _prepare_weight(op, weight, inp, classes, prob)
    return _Plan(inp, tb, w, outer, classes, inner, prob, loss_shape)


def _index_buffer(t: Any, name: str) -> Buffer:
    """A contiguous int64 array of class indices as the native core sees it (a Buffer whose
    dtype is not one of the float codes: only its address, size and device are used)."""
    if _buffers._is_torch_tensor(t):
        device = -1 if t.device.type == "cpu" else int(t.device.index or 0)
        if t.device.type not in ("cpu", "cuda"):
            raise TypeError(f"{name}: device {t.device} is not supported")
        ptr, numel, itemsize = int(t.data_ptr()), int(t.numel()), int(t.element_size())
        is_torch = True
    else:
        device = -1
        ptr, numel, itemsize = int(t.__array_interface__["data"][0]), int(t.size), 8
        is_torch = False
    shape = _shape(t)
    return Buffer(
        t,
        ptr,
        numel,
        itemsize,
        "int64",
        device,
        shape,
        _buffers.contiguous_strides(shape),
        is_torch,
    )


def _is_ndarray(x: Any) -> bool:
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


def _contiguous(x: Any) -> Any:
    """A row-major copy of ``x`` when it is not one already (torch: detached)."""
    if _buffers._is_torch_tensor(x):
        return x.detach().contiguous()
    if _is_ndarray(x):
        import numpy as np

        return np.ascontiguousarray(x)
    return x  # as_buffer names the argument and what was expected


def _dense_equal(b: Buffer) -> bool:
    return b.strides == _buffers.contiguous_strides(b.shape) or b.numel <= 1


def _empty(like: Buffer, shape: tuple[int, ...]) -> Any:
    if like.is_torch:
        return like.obj.new_empty(shape)
    import numpy as np

    return np.empty(shape, dtype=like.obj.dtype)


def _grad_buffer(op: str, plan: _Plan, out: Any) -> tuple[Any, Buffer]:
    inp = plan.input
    if out is None:
        grad = empty_grad(inp.obj, inp.shape) if inp.is_torch else _empty(inp, inp.shape)
        return grad, _buffers.as_buffer(grad, f"{op}: out", writable=True)
    ob = _buffers.as_buffer(out, f"{op}: out", writable=True)
    _buffers.check_same_layout(inp, f"{op}: input", ob, f"{op}: out")
    if not _dense_equal(ob):
        raise ValueError(f"{op}: out must be contiguous, got strides {ob.strides}")
    if ob.ptr != inp.ptr:
        _buffers.check_no_overlap(
            [(f"{op}: input", inp), (f"{op}: target", plan.target), (f"{op}: out", ob)],
            {f"{op}: out"},
        )
    return out, ob


def _stream(device: int) -> int:
    if device < 0:
        return 0
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


def _run(
    op: str,
    plan: _Plan,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    out: Any,
    compute_grad: bool,
) -> tuple[Any, Any]:
    inp = plan.input
    grad, gb = _grad_buffer(op, plan, out) if compute_grad else (None, None)
    loss = _empty(inp, plan.loss_shape if reduction == 0 else ())
    lb = _buffers.as_buffer(loss, f"{op}: loss", writable=True)
    wptr = 0
    if plan.weight is not None:
        wptr = _buffers.as_buffer(plan.weight, f"{op}: weight", writable=False).ptr
    fn = getattr(_native.core(), op)
    fn(
        input=inp.ptr,
        target=plan.target.ptr,
        weight=wptr,
        grad=0 if gb is None else gb.ptr,
        loss=lb.ptr if lb.numel > 0 else 0,
        outer=plan.outer,
        classes=plan.classes,
        inner=plan.inner,
        dtype=inp.dtype_code,
        device=inp.device,
        stream=_stream(inp.device),
        reduction=reduction,
        ignore_index=int(ignore_index),
        label_smoothing=float(label_smoothing),
        prob_target=plan.prob_target,
    )
    return loss, grad


def check_label_smoothing(label_smoothing: Any) -> float:
    """label_smoothing as torch's cross_entropy reads it: smoothing applies only where
    ``label_smoothing > 0``, and only there is it checked against 1; a negative value or NaN
    fails that test and means no smoothing (torch raises for neither)."""
    ls = float(label_smoothing)
    if not ls > 0.0:
        return 0.0
    if not ls <= 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {ls:g}")
    return ls


def cross_entropy_with_grad(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    out: Any = None,
    compute_grad: bool = True,
) -> tuple[Any, Any]:
    """``torch.nn.functional.cross_entropy`` and its gradient w.r.t. ``input``, in one pass.

    Returns ``(loss, grad)``: ``loss`` as torch returns it (a 0-dim array/tensor for 'mean' and
    'sum', one value per row for 'none'; input's dtype) and ``grad`` = dloss/dinput with
    input's shape and dtype, for ``reduction='none'`` the gradient of the sum of the per-row
    losses. ``target`` holds class indices (int64, or uint8 where torch takes it) or, with
    input's shape, class probabilities; probability targets and their weight of another dtype
    are cast to input's (:func:`gradfuse.nn.functional.cross_entropy` promotes all three, as
    torch does). ``label_smoothing`` <= 0 or NaN means none, as in torch. ``out=`` receives
    the gradient instead of a new buffer (pass ``input`` to overwrite the logits in place;
    never done by default). ``compute_grad=False`` computes the loss only and returns
    ``(loss, None)``.
    """
    red = _check_reduction(reduction)
    ls = check_label_smoothing(label_smoothing)
    plan = _plan(
        "cross_entropy",
        input,
        target,
        weight,
        ignore_index,
        ls,
        allow_prob=True,
        reduction=reduction,
    )
    return _run("cross_entropy", plan, red, ignore_index, ls, out, compute_grad)


def nll_loss_with_grad(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    out: Any = None,
    compute_grad: bool = True,
) -> tuple[Any, Any]:
    """``torch.nn.functional.nll_loss`` (``input`` holds log-probabilities) and its gradient
    w.r.t. ``input``, in one pass. Arguments and results as :func:`cross_entropy_with_grad`."""
    red = _check_reduction(reduction)
    plan = _plan(
        "nll_loss", input, target, weight, ignore_index, 0.0, allow_prob=False, reduction=reduction
    )
    return _run("nll_loss", plan, red, ignore_index, 0.0, out, compute_grad)
