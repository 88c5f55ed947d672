"""Gradient norms and global-norm clipping, each one fused pass over all gradients.

``clip_grad_norm_`` keeps the contract of :func:`torch.nn.utils.clip_grad_norm_`; ``grad_norms``
returns every gradient's norm (for spotting exploding and vanishing gradients). The native
reduction is deterministic: the same gradients give bitwise the same norms whatever the thread
count (see src/cpu/kernels/grad_norm.cpp).
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from gradfuse import _buffers, _compile, _native
from gradfuse.functional._multi_tensor import GradScaling, group, prepare

if TYPE_CHECKING:
    from torch import Tensor

# Norm kinds of the native kernel (gf::math::NormKind), as _core exports them.
_CODES = _native.codes("norm_kind")
_KINDS = {
    2.0: _CODES["l2"],
    1.0: _CODES["l1"],
    math.inf: _CODES["inf"],
    -math.inf: _CODES["neg_inf"],
    0.0: _CODES["zero"],
}
_GENERAL_P = _CODES["p"]


def _kind(norm_type: float) -> int:
    return _KINDS.get(norm_type, _GENERAL_P)


def _check_not_empty(op: str, grads: Sequence[Tensor], norm_type: float) -> None:
    # torch refuses the orders whose reduction has no identity (max, min, negative powers).
    if math.isinf(norm_type) or norm_type < 0:
        for i, g in enumerate(grads):
            if g.numel() == 0:
                name = {math.inf: "inf", -math.inf: "-inf"}.get(norm_type, f"{norm_type:g}")
                raise RuntimeError(
                    f"{op}: cannot compute the {name} norm of gradient {i} (shape "
                    f"{tuple(g.shape)}, dtype {g.dtype}): it is empty and the operation does "
                    f"not have an identity"
                )


def _group_norms(op: str, grads: Sequence[Tensor], norm_type: float) -> list[tuple[list[int], Any]]:
    """One native pass per (device, dtype) group of ``grads``.

    Returns (indices into grads, out) per group, where out holds the group's per-tensor norms
    followed by its total, in float64 for float64 gradients and float32 otherwise.
    """
    import torch

    for i, t in enumerate(grads):
        if t.is_sparse:
            raise RuntimeError(
                f"{op}: gradient {i} (shape {tuple(t.shape)}, dtype {t.dtype}) is sparse; "
                f"gradfuse norms need dense gradients"
            )
    _check_not_empty(op, grads, norm_type)
    n = len(grads)
    buffers = prepare(op, [("grads", grads)], written=())
    core = _native.core()
    out_groups: list[tuple[list[int], Any]] = []
    for g in group(buffers, 1, n):
        ref = grads[g.indices[0]]
        opmath = torch.float64 if ref.dtype == torch.float64 else torch.float32
        out = torch.empty(len(g.indices) + 1, dtype=opmath, device=ref.device)
        core.grad_norm(
            g.slots,
            g.numels,
            g.dtype_code,
            g.device,
            g.stream,
            kind=_kind(norm_type),
            p=norm_type,
            out=int(out.data_ptr()),
        )
        out_groups.append((g.indices, out))
    return out_groups


def _result_dtype(grads: Sequence[Tensor]) -> Any:
    import torch

    dtype = grads[0].dtype
    for g in grads[1:]:
        dtype = torch.promote_types(dtype, g.dtype)
    return dtype


def _dtensor_norms(op: str, grads: Sequence[Tensor], norm_type: float) -> list[Tensor]:
    """Every gradient's norm (0-dim tensors) where some are DTensors (FSDP2's sharded grads,
    tensor parallelism): the norms of the local shards in one fused pass, then, per mesh and
    set of sharded mesh dims, one ``all_reduce`` over each sharded dim that combines them
    (sum of ``norm ** p``, max, min, or the sum of counts for ``p = 0``). Replicated dims hold
    the same values on every rank and are not combined. Every rank must pass the same tensors."""
    import torch
    import torch.distributed as dist

    locals_: list[Tensor] = []
    for i, g in enumerate(grads):
        locals_.append(
            _buffers._dtensor_local(g, f"{op}: grads[{i}]")[0] if _buffers._is_dtensor(g) else g
        )
    norms: list[Any] = [None] * len(grads)
    # An empty shard of a non-empty gradient (trailing ranks of an uneven cut) adds nothing.
    identity = math.inf if norm_type == -math.inf else 0.0
    todo = []
    for i, (g, t) in enumerate(zip(grads, locals_, strict=True)):
        if t.numel() == 0 and g.numel() != 0:
            dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
            norms[i] = torch.tensor(identity, dtype=dtype, device=t.device)
        else:
            todo.append(i)
    for indices, out in _group_norms(op, [locals_[i] for i in todo], norm_type) if todo else []:
        for k, j in enumerate(indices):
            norms[todo[j]] = out[k]
    layouts: dict[tuple[Any, ...], list[int]] = {}
    for i, g in enumerate(grads):
        if _buffers._is_dtensor(g):
            dt: Any = g
            dims = tuple(m for m, pl in enumerate(dt.placements) if not pl.is_replicate())
            if dims:
                key = (id(dt.device_mesh), dims, norms[i].dtype, norms[i].device)
                layouts.setdefault(key, []).append(i)
    finite = not math.isinf(norm_type) and norm_type != 0.0
    reduce_op = {math.inf: dist.ReduceOp.MAX, -math.inf: dist.ReduceOp.MIN}.get(
        norm_type, dist.ReduceOp.SUM
    )
    for (_, dims, _, _), idx in layouts.items():
        mesh: Any = grads[idx[0]].device_mesh  # type: ignore[attr-defined]
        v = torch.stack([norms[i] for i in idx])
        if finite:
            v = v.pow(norm_type)
        for m in dims:
            dist.all_reduce(v, reduce_op, group=mesh.get_group(m))
        if finite:
            v = v.pow(1.0 / norm_type)
        for k, i in enumerate(idx):
            norms[i] = v[k]
    return norms


def norm_dtype(grads: Sequence[Tensor]) -> Any:
    """The dtype of :func:`total_norm`'s result: float64 if any gradient is float64 (each
    (device, dtype) group's norms are float64 for float64 gradients, float32 otherwise, and
    the total of several groups is float64 if any of them is)."""
    import torch

    return torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32


def total_norm(op: str, grads: Sequence[Tensor], norm_type: float) -> Tensor:
    """The norm of all ``grads`` together (torch's total: the norm of the per-tensor norms),
    in float64 for float64 gradients, float32 otherwise, on the first gradient's device.
    No host synchronisation."""
    import torch

    if not grads:
        return torch.tensor(0.0)
    dtensors = any(_buffers._is_dtensor(g) for g in grads)
    if _compile.is_compiling() and not dtensors:
        # torch.compile cannot trace the native pass: the op runs this very function on the
        # real gradients (the same bits as eager), and the graph keeps no break.
        _compile.require_op(_compile.NORM_OP, op)
        traced: Tensor = torch.ops.gradfuse.total_norm(op, list(grads), float(norm_type))
        return traced
    if dtensors:
        norms = _dtensor_norms(op, grads, norm_type)
        dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
        parts = torch.stack([n.to(grads[0].device, dtype) for n in norms])
        sharded_total: Tensor = torch.linalg.vector_norm(parts, norm_type)
        return sharded_total
    groups = _group_norms(op, grads, norm_type)
    if len(groups) == 1:
        last: Tensor = groups[0][1][-1]
        return last
    first = grads[0].device
    dtype = torch.float64 if any(out.dtype == torch.float64 for _, out in groups) else torch.float32
    if norm_type == 0.0:
        # torch's total of 0-"norms" counts the tensors with a nonzero count.
        parts = torch.cat([out[:-1].to(first, dtype) for _, out in groups])
    else:
        parts = torch.stack([out[-1].to(first, dtype) for _, out in groups])
    total: Tensor = torch.linalg.vector_norm(parts, norm_type)
    return total


def scale_grads_(grads: Sequence[Tensor], clip_coef: Tensor) -> None:
    """grads *= clip_coef (a 1-element float32 tensor) in one fused pass per (device, dtype)."""
    if _compile.is_compiling() and not any(_buffers._is_dtensor(g) for g in grads):
        import torch

        # As total_norm: the native pass as one op under torch.compile.
        _compile.require_op(_compile.SCALE_OP, "clip_grad_norm_")
        torch.ops.gradfuse.scale_grads_(list(grads), clip_coef)
        return
    scaling = GradScaling(clip_coef=clip_coef)
    scaling.check("clip_grad_norm_")
    buffers = prepare("clip_grad_norm_", [("grads", grads)], written=("grads",))
    core = _native.core()
    for g in group(buffers, 1, len(grads)):
        _, _, clip = scaling.pointers(g.device)
        core.scale_grads(g.slots, g.numels, g.dtype_code, g.device, g.stream, clip_coef=clip)


def _as_list(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    import torch

    if isinstance(parameters, torch.Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    params = list(parameters)
    if is_generator and len(params) == 0:
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3
        )
    return params


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Clip the gradient norm of an iterable of parameters, as torch.nn.utils.clip_grad_norm_.

    The norm is computed over all gradients together, as if concatenated into one vector, in one
    fused pass; every gradient is then multiplied by ``min(max_norm / (total + 1e-6), 1)`` in a
    second fused pass (no host synchronisation unless ``error_if_nonfinite``). ``foreach`` is
    accepted for compatibility; gradfuse always fuses.

    Returns the total norm, in the gradients' dtype (promoted across dtypes), on the first
    gradient's device.
    """
    import torch

    del foreach  # always fused
    params = _as_list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    if not grads:
        return torch.tensor(0.0)
    total = total_norm("clip_grad_norm_", grads, norm_type)
    if error_if_nonfinite and torch.logical_or(total.isnan(), total.isinf()):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    clip_coef = torch.clamp(max_norm / (total + 1e-6), max=1.0).to(torch.float32).reshape(1)
    scale_grads_(grads, clip_coef)
    return total.to(_result_dtype(grads))


def grad_norms(parameters: Tensor | Iterable[Tensor], norm_type: float = 2.0) -> Tensor:
    """The norm of every parameter's gradient, in one fused pass.

    Parameters without a gradient are skipped, so entry ``k`` belongs to the ``k``-th parameter
    that has one. The result is a 1-D tensor in the gradients' dtype (promoted across dtypes)
    on the first gradient's device; an empty float32 CPU tensor when no parameter has a
    gradient. Same values as ``torch.linalg.vector_norm(p.grad, norm_type)`` per parameter.
    """
    import torch

    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    norm_type = float(norm_type)
    if not grads:
        return torch.empty(0)
    dtype = _result_dtype(grads)
    if any(_buffers._is_dtensor(g) for g in grads):
        each = _dtensor_norms("grad_norms", grads, norm_type)
        return torch.stack([n.to(grads[0].device, dtype) for n in each])
    groups = _group_norms("grad_norms", grads, norm_type)
    if len(groups) == 1:
        norms: Tensor = groups[0][1][:-1].to(dtype)
        return norms
    result = torch.empty(len(grads), dtype=dtype, device=grads[0].device)
    for indices, out in groups:
        result[torch.tensor(indices, device=result.device)] = out[:-1].to(result.device, dtype)
    return result
