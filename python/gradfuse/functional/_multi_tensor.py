"""Validation and grouping shared by every multi-tensor (optimizer) call.

A call names its lists in slot order (``params, grads, exp_avgs, ...``). Every element of every
list is checked against the params entry at the same index, every in-place slot is checked for
aliasing, and only then are the tensors grouped by (device, dtype) into native calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gradfuse import _buffers
from gradfuse._buffers import Buffer


@dataclass
class Group:
    """The tensors of one native call: one device, one dtype."""

    device: int
    dtype_code: int
    indices: list[int] = field(default_factory=list)
    slots: list[list[int]] = field(default_factory=list)  # slots[d][k]: pointer
    numels: list[int] = field(default_factory=list)

    @property
    def stream(self) -> int:
        if self.device < 0:
            return 0
        import torch

        return int(torch.cuda.current_stream(self.device).cuda_stream)


@dataclass
class GradScaling:
    """Scalars the kernels apply to the gradients (see GradScaling in gradfuse/tensor_list.h).

    Each is None or a 1-element float32 tensor (or numpy array for CPU calls):
    ``grad_scale`` (torch.amp.GradScaler's scale: gradients are divided by it), ``found_inf``
    (nonzero: the call writes nothing) and ``clip_coef`` (gradients are multiplied by it; the
    caller clamps it to at most 1). On CUDA they are read on the device: no host sync.
    """

    grad_scale: Any = None
    found_inf: Any = None
    clip_coef: Any = None
    _on_device: dict[int, tuple[Any, Any, Any]] = field(default_factory=dict)

    def check(self, op: str) -> None:
        for name in ("grad_scale", "found_inf", "clip_coef"):
            x = getattr(self, name)
            if x is None:
                continue
            b = _buffers.as_buffer(x, f"{op}: {name}", writable=False)
            if b.dtype != "float32" or b.numel != 1:
                raise TypeError(
                    f"{op}: {name} must be a 1-element float32 tensor, got {b.describe()}"
                )

    def pointers(self, device: int) -> tuple[int, int, int]:
        """Addresses of the three scalars on ``device`` (-1: host), 0 for an absent one."""
        if device not in self._on_device:
            self._on_device[device] = tuple(
                _to_device(getattr(self, n), device)
                for n in ("grad_scale", "found_inf", "clip_coef")
            )
        return tuple(  # type: ignore[return-value]
            0 if x is None else int(_buffers.as_buffer(x, "scalar", writable=False).ptr)
            for x in self._on_device[device]
        )


def _to_device(x: Any, device: int) -> Any:
    if x is None or not _buffers._is_torch_tensor(x):
        return x
    target = "cpu" if device < 0 else f"cuda:{device}"
    return x.to(target, non_blocking=True).contiguous()


def _copy_like(ref: Buffer, src: Buffer) -> Any:
    """A copy of ``src``'s values laid out like ``ref`` (for a read-only slot)."""
    if ref.is_torch:
        import torch

        out = torch.empty_like(ref.obj)
        out.copy_(src.obj)
        return out
    import numpy as np

    out_np = np.empty_like(ref.obj)
    np.copyto(out_np, src.obj)
    return out_np


def prepare(
    op: str,
    slots: Sequence[tuple[str, Sequence[Any]]],
    written: Sequence[str],
) -> list[Buffer | None]:
    """Check every list; return nothing written yet. See :func:`group`.

    Returns the flat list of buffers, slot-major: ``buffers[d * n + i]``.
    """
    names = [name for name, _ in slots]
    n = len(slots[0][1])
    for name, values in slots[1:]:
        if len(values) != n:
            raise ValueError(
                f"{op}: expected one entry of {name} per entry of {names[0]}, got "
                f"{len(values)} {name} for {n} {names[0]}"
            )
    written_set = set(written)
    fast = _buffers._fast_torch_buffer
    buffers: list[Buffer | None] = []
    for name, values in slots:
        writable = name in written_set
        for i, x in enumerate(values):
            if x is None:
                buffers.append(None)
            else:  # the message is only formatted on the full (slow, or failing) path
                b = fast(x, writable)
                buffers.append(
                    b
                    if b is not None
                    else _buffers.as_buffer(x, f"{op}: {name}[{i}]", writable=writable)
                )
    for d, (name, _) in enumerate(slots[1:], start=1):
        for i in range(n):
            ref, other = buffers[i], buffers[d * n + i]
            if other is None or ref is None:
                continue
            if not (
                other.shape == ref.shape
                and other.dtype == ref.dtype
                and other.device == ref.device
                and other.is_torch == ref.is_torch
                and other.sharding == ref.sharding
            ):
                _buffers.check_same_layout(ref, f"{names[0]}[{i}]", other, f"{op}: {name}[{i}]")
            if other.strides != ref.strides:
                if name in written_set:
                    raise ValueError(
                        f"{op}: {name}[{i}] has strides {other.strides} but {names[0]}[{i}] "
                        f"has strides {ref.strides}; tensors updated in place must share the "
                        f"params' memory layout"
                    )
                buffers[d * n + i] = _buffers.as_buffer(
                    _copy_like(ref, other), f"{op}: {name}[{i}]", writable=False
                )
    written_slots = [name in written_set for name in names]
    clash = _buffers.find_overlap(buffers, lambda k: written_slots[k // n] if n else False)
    if clash is not None:
        first, second = (f"{op}: {names[k // n]}[{k % n}]" for k in clash)
        _buffers.raise_overlap(first, second)
    return buffers


def group(
    buffers: Sequence[Buffer | None], depth: int, n: int, keys: Sequence[Any] | None = None
) -> list[Group]:
    """Group the tensors of a prepared call by (device, dtype[, key]): one native call each.

    Every one of the first ``depth`` slots must be present (not None) for every tensor.
    ``keys`` splits groups further (e.g. first momentum step or not).
    """
    present = [b for b in buffers[: depth * n] if b is not None]
    if n and len(present) == depth * n and _one_group(present[:n], keys):
        # The usual optimizer step: every tensor on one device, in one dtype.
        ref0 = present[0]
        slots = [[b.ptr for b in present[d * n : (d + 1) * n]] for d in range(depth)]
        numels = [b.numel for b in present[:n]]
        return [Group(ref0.device, ref0.dtype_code, list(range(n)), slots, numels)]
    groups: dict[tuple[Any, ...], Group] = {}
    for i in range(n):
        ref = buffers[i]
        assert ref is not None
        key = (ref.device, ref.dtype_code, None if keys is None else keys[i])
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(ref.device, ref.dtype_code, slots=[[] for _ in range(depth)])
        g.indices.append(i)
        g.numels.append(ref.numel)
        for d in range(depth):
            b = buffers[d * n + i]
            assert b is not None
            g.slots[d].append(b.ptr)
    return list(groups.values())


def _one_group(refs: Sequence[Buffer], keys: Sequence[Any] | None) -> bool:
    """Whether the params' buffers share one device, one dtype and one key."""
    device, dtype = refs[0].device, refs[0].dtype
    if not all(b.device == device and b.dtype == dtype for b in refs):
        return False
    return keys is None or all(k == keys[0] for k in keys)
