"""Turn numpy arrays and torch tensors into raw views for ``gradfuse._core``.

Every check on user data happens here, before any kernel runs, so that a call that fails leaves
every array exactly as it was. Torch is imported only when a torch tensor is seen.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gradfuse import _native

# gf::DType's codes (src/gradfuse/dtype.h), as _core exports them.
DTYPE_CODES: dict[str, int] = _native.codes("dtype")
if TYPE_CHECKING:
    # `as` marks the re-export for mypy (the other modules name it _buffers.PreparedList).
    from gradfuse._core import PreparedList as PreparedList  # noqa: PLC0414
else:  # the checked tensors of a call, kept native (see prepare_plain): a read-only sequence
    PreparedList = _native.core().PreparedList
    Sequence.register(PreparedList)
SUPPORTED_DTYPES = "float32, float64, float16 or bfloat16"
# 8-bit block-wise state (gradfuse.optim._quant8): uint8 codes, accepted only where a call says
# so (as_buffer(codes=True)); their dtype code is the native state code of 8-bit state.
CODES_DTYPE = "uint8"


@functools.cache
def state_q8_code() -> int:
    return int(_native.core().state_q8_code())


class Buffer(NamedTuple):
    """A dense array as the native core sees it: an address, a size, a dtype, a device."""

    obj: Any  # the array itself (keeps the memory alive, and is what users passed)
    ptr: int
    numel: int
    itemsize: int
    dtype: str  # one of DTYPE_CODES
    device: int  # -1: host memory; otherwise the CUDA device index
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    is_torch: bool
    # For a DTensor: its mesh and placements (the buffer is its local shard); None otherwise.
    sharding: str | None = None

    @property
    def dtype_code(self) -> int:
        if self.dtype == CODES_DTYPE:
            return state_q8_code()
        return DTYPE_CODES[self.dtype]

    @property
    def device_str(self) -> str:
        return "cpu" if self.device < 0 else f"cuda:{self.device}"

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def describe(self) -> str:
        return f"shape {tuple(self.shape)}, dtype {self.dtype}, device {self.device_str}"


def _is_torch_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _is_dense(shape: Sequence[int], strides: Sequence[int]) -> bool:
    """True when the elements fill one contiguous block, in some dimension order, each once."""
    if 0 in shape:
        return True
    dims = sorted(
        ((st, sz) for sz, st in zip(shape, strides, strict=True) if sz != 1),
        reverse=True,
    )
    expected = 1
    for st, sz in reversed(dims):
        if st != expected:
            return False
        expected *= sz
    return True


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides, in elements, of a dense array of ``shape`` (size-0 dimensions count
    as 1, as torch computes them)."""
    strides = []
    acc = 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(strides))


def describe(x: object) -> str:
    """A short description of any argument, for error messages."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    device = getattr(x, "device", "cpu" if shape is not None else None)
    if shape is None:
        return f"an object of type {type(x).__name__}"
    return f"{type(x).__name__} of shape {tuple(shape)}, dtype {dtype}, device {device}"


# The common case of an optimizer step: a contiguous CPU or CUDA tensor of a supported dtype.
# An optimizer over a model validates hundreds of tensors per step, so this path costs a handful
# of attribute reads; anything unusual (or wrong) takes the full path below, which explains it.
_plain_tensor_types: set[type] = set()
_fast_dtypes: dict[Any, tuple[str, int]] = {}  # torch.dtype -> (name, itemsize)


@functools.cache
def _cuda_compiled() -> bool:
    from gradfuse._native import core

    return bool(core().build_info()["cuda_compiled"])


def _fast_torch_buffer(t: Any, writable: bool) -> Buffer | None:
    if type(t) not in _plain_tensor_types:
        if "torch" not in sys.modules:
            return None  # no torch tensor can exist; numpy users never import (or need) torch
        import torch

        if type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            return None
        if not _fast_dtypes:
            for name in DTYPE_CODES:
                dt = getattr(torch, name)
                _fast_dtypes[dt] = (name, torch.empty((), dtype=dt).element_size())
            from gradfuse._native import core

            # The same conditions, for a whole call at once (prepare_plain below).
            core().register_plain_types(Buffer, torch.Tensor, torch.nn.Parameter, _fast_dtypes)
        _plain_tensor_types.add(type(t))
    info = _fast_dtypes.get(t.dtype)
    if info is None or t.is_sparse or not t.is_contiguous() or t.is_neg():
        return None  # the full path explains what is wrong (or handles the layout)
    if t.is_cpu:
        device = -1
    elif t.is_cuda and _cuda_compiled():
        device = t.get_device()
    else:
        return None
    if writable and t.requires_grad and t.grad_fn is not None:
        return None
    ptr = t.data_ptr()
    itemsize = info[1]
    if ptr % itemsize:
        return None
    # tuple.__new__ skips the namedtuple's Python-level __new__ (a third of this path's cost).
    return _new_tuple(
        Buffer, (t, ptr, t.numel(), itemsize, info[0], device, t.shape, t.stride(), True, None)
    )


_new_tuple = tuple.__new__


def prepare_plain(
    slots: Sequence[tuple[str, Sequence[Any]]], written: set[str]
) -> PreparedList | None:
    """The buffers of every slot, slot-major, when the call is the common case: every entry a
    plain tensor (as :func:`_fast_torch_buffer` accepts) or None, laid out like its param (same
    shape, strides, dtype, device), and no written tensor sharing memory with another.
    Otherwise None, and the caller runs the full checks, which handle or explain the rest.

    The same checks as the Python path, done natively (~0.3 us per tensor instead of ~2.3 us:
    an optimizer over a model passes hundreds of tensors per step), into a native
    :class:`PreparedList`: a read-only sequence of the same Buffers, made on demand.
    """
    if not _fast_dtypes:  # no torch tensor seen yet: the native side knows no types
        return None
    from gradfuse._native import core

    return core().prepare_plain(  # type: ignore[no-any-return]
        [values for _, values in slots], [name in written for name, _ in slots]
    )


def none_in(buffers: Sequence[Buffer | None], start: int, stop: int) -> bool:
    """Whether ``buffers[start:stop]`` holds a None (without making a PreparedList's Buffers)."""
    if isinstance(buffers, PreparedList):
        return buffers.none_in(start, stop)
    return any(b is None for b in buffers[start:stop])


def as_buffer(x: object, name: str, *, writable: bool, codes: bool = False) -> Buffer:
    """View ``x`` (a torch tensor or a numpy array) for the native core, or raise.

    ``name`` is how the error message refers to the argument (e.g. ``"params[3]"``).
    ``writable`` arrays must be writable in place; others are only read. ``codes``: a uint8
    torch tensor is accepted too (8-bit state).
    """
    fast = _fast_torch_buffer(x, writable)
    if fast is not None:
        return fast
    if codes and _is_torch_tensor(x) and str(getattr(x, "dtype", "")) == "torch.uint8":
        return _torch_buffer(x, name, writable=writable, codes=True)
    if _is_torch_tensor(x):
        if _is_dtensor(x):
            local, sharding = _dtensor_local(x, name)
            buf = _torch_buffer(local, name, writable=writable)
            return buf._replace(sharding=sharding)
        return _torch_buffer(x, name, writable=writable)
    if type(x).__module__ == "numpy" and type(x).__name__ == "ndarray":
        return _numpy_buffer(x, name, writable=writable)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {describe(x)}")


def _is_dtensor(x: object) -> bool:
    return type(x).__name__ == "DTensor" and type(x).__module__.startswith(
        "torch.distributed.tensor"
    )


def refuse_sharded(op: str, params: Sequence[Any], why: str) -> None:
    """Raise NotImplementedError naming ``op``'s ``params[i]`` if it is a DTensor sharded over
    some mesh dimension (FSDP2): for an update that is not elementwise (``why``: what it needs
    of the whole tensor), a rank's local shard is not the tensor."""
    plain = _plain_tensor_types
    if plain and all(type(p) in plain for p in params):
        return  # the usual step: a type check per param, no message built
    for i, x in enumerate(params):
        if _is_dtensor(x) and any(pl.is_shard() for pl in x.placements):
            raise NotImplementedError(
                f"{op}: params[{i}]: DTensor sharded as {tuple(x.placements)} (global shape "
                f"{tuple(x.shape)}): {why}, which a rank's shard does not hold; not supported "
                f"for sharded (FSDP2) params yet"
            )


def _dtensor_local(t: Any, name: str) -> tuple[Any, str]:
    """A DTensor (torch.distributed.tensor: FSDP2's sharded params and grads, tensor
    parallelism) is updated through its local shard: every gradfuse update is elementwise, so
    each rank updating the elements it holds is the whole update, with no communication.
    A Partial placement holds unreduced partial sums, not values: refused (reduce it first).
    Returns the local tensor and a description of the sharding, which every other tensor of
    the same parameter must share (checked in check_same_layout)."""
    placements = tuple(t.placements)
    if any(p.is_partial() for p in placements):
        raise ValueError(
            f"{name}: DTensor with placements {placements} (global shape {tuple(t.shape)}, "
            f"dtype {t.dtype}) holds partial sums; expected Shard or Replicate placements "
            f"(call .redistribute() or .full_tensor() first)"
        )
    return t._local_tensor, f"DTensor {placements} on {t.device_mesh}"


def _torch_buffer(t: Any, name: str, *, writable: bool, codes: bool = False) -> Buffer:
    import torch

    if t.layout != torch.strided:
        raise TypeError(
            f"{name}: {t.layout} tensors are not supported (got a tensor of shape "
            f"{tuple(t.shape)}, dtype {t.dtype}); expected a dense (strided) tensor"
        )
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPE_CODES and not (codes and dtype == CODES_DTYPE):
        raise TypeError(
            f"{name}: dtype {t.dtype} is not supported (tensor of shape {tuple(t.shape)} on "
            f"{t.device}); expected {SUPPORTED_DTYPES}"
        )
    if t.device.type == "cpu":
        device = -1
    elif t.device.type == "cuda":
        if not _cuda_compiled():
            raise ValueError(
                f"{name}: is a CUDA tensor (shape {tuple(t.shape)}, dtype {t.dtype}, device "
                f"{t.device}) but this gradfuse was built without CUDA (GRADFUSE_CUDA=OFF or no "
                f"nvcc at build time); move the tensors to the CPU or install a CUDA build"
            )
        device = t.device.index if t.device.index is not None else torch.cuda.current_device()
    else:
        raise TypeError(
            f"{name}: device {t.device} is not supported (tensor of shape {tuple(t.shape)}, "
            f"dtype {t.dtype}); expected a cpu or cuda tensor"
        )
    if t.is_neg():
        raise ValueError(f"{name}: tensors with the negative bit set are not supported")
    shape = tuple(int(s) for s in t.shape)
    strides = tuple(int(s) for s in t.stride())
    if not _is_dense(shape, strides):
        raise ValueError(
            f"{name}: expected a dense tensor (contiguous, or a permutation of a contiguous "
            f"layout), got shape {shape} with strides {strides}, dtype {dtype}, device "
            f"{t.device}; call .contiguous() first"
        )
    if writable and t.requires_grad and t.grad_fn is not None:
        raise ValueError(
            f"{name}: cannot update a non-leaf tensor that requires grad in place "
            f"(shape {shape}, dtype {dtype})"
        )
    ptr = int(t.data_ptr())
    if t.numel():  # an empty tensor is never read
        _check_aligned(name, ptr, int(t.element_size()), f"tensor (shape {shape}, dtype {dtype})")
    return Buffer(
        obj=t,
        ptr=ptr,
        numel=int(t.numel()),
        itemsize=int(t.element_size()),
        dtype=dtype,
        device=device,
        shape=shape,
        strides=strides,
        is_torch=True,
    )


def _numpy_buffer(a: Any, name: str, *, writable: bool) -> Buffer:
    dtype = a.dtype.name
    if dtype not in DTYPE_CODES:
        raise TypeError(
            f"{name}: dtype {a.dtype} is not supported (array of shape {a.shape}); expected "
            f"{SUPPORTED_DTYPES}"
        )
    if not a.dtype.isnative:
        raise ValueError(f"{name}: non-native byte order {a.dtype.str} is not supported")
    if writable and not a.flags.writeable:
        raise ValueError(
            f"{name}: the array is read-only (shape {a.shape}, dtype {dtype}) but is updated "
            f"in place; pass a writable array"
        )
    shape = tuple(int(s) for s in a.shape)
    if any(s % a.itemsize for s in a.strides):
        raise ValueError(f"{name}: strides {a.strides} are not multiples of the item size")
    strides = tuple(int(s) // a.itemsize for s in a.strides)
    if not _is_dense(shape, strides) or any(s < 0 for s in strides):
        raise ValueError(
            f"{name}: expected a dense array (C-contiguous, or a permutation of one), got shape "
            f"{shape} with strides {a.strides} bytes, dtype {dtype}; use numpy.ascontiguousarray"
        )
    ptr = int(a.__array_interface__["data"][0])
    if a.size:  # an empty array is never read
        _check_aligned(name, ptr, int(a.itemsize), f"array (shape {shape}, dtype {dtype})")
    return Buffer(
        obj=a,
        ptr=ptr,
        numel=int(a.size),
        itemsize=int(a.itemsize),
        dtype=dtype,
        device=-1,
        shape=shape,
        strides=strides,
        is_torch=False,
    )


def _check_aligned(name: str, ptr: int, itemsize: int, what: str) -> None:
    """Kernels read and write whole elements (and vectors of them): an element at an address
    that is not a multiple of its size is undefined behaviour in C++ and can fault in a vector
    load. numpy (``frombuffer(..., offset=1)``, unaligned dtypes) and torch (``frombuffer``) can
    both make such arrays."""
    if ptr % itemsize:
        raise ValueError(
            f"{name}: the {what} starts at address {ptr:#x}, not a multiple of its item size "
            f"{itemsize} (misaligned data); pass an aligned copy (e.g. .copy() / .clone())"
        )


def check_same_layout(ref: Buffer, ref_name: str, other: Buffer, other_name: str) -> None:
    """``other`` must match ``ref`` in shape, dtype, device and kind of array."""
    ref = ref._replace(shape=tuple(ref.shape))
    other = other._replace(shape=tuple(other.shape))
    kinds = {True: "a torch.Tensor", False: "a numpy.ndarray"}
    # In order: the field compared, the error, how each side says its value, what the message
    # adds about ref, what is expected the same.
    checks: tuple[tuple[str, type[Exception], Callable[[Buffer], str], str, str], ...] = (
        ("shape", ValueError, lambda b: f"has shape {b.shape}", "", ""),
        (
            "dtype",
            TypeError,
            lambda b: f"has dtype {b.dtype}",
            f" (both {ref.shape} on {ref.device_str})",
            "dtype",
        ),
        (
            "device",
            ValueError,
            lambda b: f"is on {b.device_str}",
            f" (shape {ref.shape}, dtype {ref.dtype})",
            "device",
        ),
        (
            "sharding",
            ValueError,
            lambda b: f"is a {b.sharding or 'plain tensor'}",
            "",
            "distribution",
        ),
        ("is_torch", TypeError, lambda b: f"is {kinds[b.is_torch]}", "", "kind of array"),
    )
    for field, error, says, about_ref, expected in checks:
        if getattr(other, field) != getattr(ref, field):
            end = f"{about_ref}; expected the same {expected}" if expected else ""
            raise error(f"{other_name} {says(other)} but {ref_name} {says(ref)}{end}")


def find_overlap(
    buffers: Sequence[Buffer | None], written: Callable[[int], bool]
) -> tuple[int, int] | None:
    """Indices of two buffers that share memory where at least one is ``written`` (by index),
    or None. Sorted by (device, start address), an overlap always shows against the buffer
    with the furthest end seen so far on the same device."""
    spans = sorted(
        (b.device, b.ptr, b.ptr + b.numel * b.itemsize, k)
        for k, b in enumerate(buffers)
        if b is not None and b.numel
    )
    far_end, far_k, far_device = -1, -1, None
    for device, start, end, k in spans:
        if device == far_device and start < far_end and (written(k) or written(far_k)):
            return far_k, k
        if device != far_device or end > far_end:
            far_end, far_k, far_device = end, k, device
    return None


def raise_overlap(a: str, b: str) -> None:
    raise ValueError(
        f"{b} and {a} share memory; every tensor updated in place must be distinct from all "
        f"other tensors in the call (pass each parameter once)"
    )


def check_no_overlap(named: Sequence[tuple[str, Buffer]], written: set[str]) -> None:
    """Refuse any written buffer that shares memory with another buffer of the same call."""
    clash = find_overlap([b for _, b in named], lambda k: named[k][0] in written)
    if clash is not None:
        raise_overlap(named[clash[0]][0], named[clash[1]][0])
