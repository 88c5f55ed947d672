"""Reuse of large CPU gradient buffers between loss calls.

A fused loss writes its input gradient into a new buffer. On the CPU torch takes every large
allocation fresh from the kernel (glibc mmap) and returns it on free, so each call pays a page
fault and a kernel zeroing pass per 4 KiB page *before* the kernel writes its first byte:
measured on the 2-core EPYC dev box, first-touching the 524 MB gradient of a 4096 x 32000
cross_entropy costs about 2x the whole fused pass over warm memory (benchmarks/cpu/
notes-loss-perf.md). A training loop asks for the same buffer every step, so gradfuse keeps the
storages of the gradients it handed out and gives one back once nothing else references it.

Safety: a storage is reused only when its reference count says that the cache holds the only
reference (no tensor, view, numpy array or ``.grad`` anywhere points at it), under a lock, so
two tensors handed out never share memory while both are alive. The retained memory is bounded
(``set_grad_buffer_cache(max_bytes)``; 0 turns the cache off and frees what it holds). Only CPU
torch tensors of at least ``_MIN_BYTES`` go through it: smaller ones come from the malloc heap
without fresh pages, and CUDA has torch's caching allocator.
"""

from __future__ import annotations

import threading
from typing import Any

from gradfuse import _buffers

_MIN_BYTES = 1 << 20
_DEFAULT_MAX_BYTES = 2 << 30

_lock = threading.Lock()
_limit = [_DEFAULT_MAX_BYTES]  # the bound on held bytes (a one-item list: module state)
_storages: list[Any] = []  # torch.UntypedStorage, oldest first


def _use_count(storage: Any) -> int:
    import torch

    return int(torch._C._storage_Use_Count(storage._cdata))


def _held_bytes() -> int:
    return sum(int(s.nbytes()) for s in _storages)


def _drop_free(need: int) -> None:
    """Forgets free storages (oldest first) until ``need`` more bytes fit under the limit."""
    i = 0
    while i < len(_storages) and _held_bytes() + need > _limit[0]:
        if _use_count(_storages[i]) == 1:
            del _storages[i]
        else:
            i += 1


def set_grad_buffer_cache(max_bytes: int) -> None:
    """Bounds the memory gradfuse keeps for reuse as loss gradient buffers (CPU torch tensors of
    at least 1 MiB; default 2 GiB). ``0`` disables the cache and releases the buffers it holds
    (buffers still referenced elsewhere stay with their holders)."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
    with _lock:
        _limit[0] = max_bytes
        _drop_free(0)
        if max_bytes == 0:
            _storages.clear()


def grad_buffer_cache_info() -> dict[str, int]:
    """The cache's state: ``max_bytes``, ``buffers`` and ``bytes`` held, ``in_use`` (handed out
    and still referenced)."""
    with _lock:
        return {
            "max_bytes": _limit[0],
            "buffers": len(_storages),
            "bytes": _held_bytes(),
            "in_use": sum(1 for s in _storages if _use_count(s) > 1),
        }


def empty_grad(like: Any, shape: tuple[int, ...]) -> Any:
    """An uninitialised contiguous tensor of ``shape`` with ``like``'s dtype and device, from the
    cache when ``like`` is a large CPU tensor."""
    import torch

    dtype = like.dtype
    numel = 1
    for s in shape:
        numel *= int(s)
    nbytes = numel * like.element_size()
    if like.device.type != "cpu" or nbytes < _MIN_BYTES or _limit[0] == 0:
        return torch.empty(shape, dtype=dtype, device=like.device)
    strides = _buffers.contiguous_strides(shape)
    with _lock:
        storage = None
        for i, s in enumerate(_storages):
            if int(s.nbytes()) == nbytes and _use_count(s) == 1:
                storage = s
                _storages.append(_storages.pop(i))  # most recently used last
                break
        if storage is None:
            storage = torch.empty(numel, dtype=dtype).untyped_storage()
            _drop_free(nbytes)
            if _held_bytes() + nbytes <= _limit[0]:
                _storages.append(storage)
        # A fresh tensor (not a view of a cached one) over the storage: it owns a reference,
        # which is what marks the storage as in use.
        out = torch.empty(0, dtype=dtype).set_(storage, 0, shape, strides)
    return out
