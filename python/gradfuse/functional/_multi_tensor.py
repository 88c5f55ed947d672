"""Validation and grouping shared by every multi-tensor (optimizer) call.

A call names its lists in slot order (``params, grads, exp_avgs, ...``). Every element of every
list is checked against the params entry at the same index, every in-place slot is checked for
aliasing, and only then are the tensors grouped by (device, dtype) into native calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradfuse import _buffers, _native
from gradfuse._buffers import Buffer


@dataclass
class Group:
    """The tensors of one native call: one device, one dtype."""

    device: int
    dtype_code: int
    indices: list[int] = field(default_factory=list)
    state_dtype_code: int = -1  # dtype code of the state slots; -1: the params' (see group)
    has_extra: bool = False  # the last slot is the policy's extra list (see group)
    slots: list[list[int]] = field(default_factory=list)  # slots[d][k]: pointer
    numels: list[int] = field(default_factory=list)
    # The engine's usual call (group(native=True)): the checked tensors of every slot, handed
    # whole to the native call in place of slots and numels (which stay empty).
    prepared: _buffers.PreparedList | None = None

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


class LayoutMismatch(ValueError):
    """A tensor the update writes is laid out otherwise than its param (refused before anything
    is written). An optimizer that owns that tensor (its state) may re-lay it and step again."""


def _copy_like(ref: Buffer, src: Buffer) -> Any:
    """A copy of ``src``'s values (in its dtype) laid out like ``ref`` (for a read-only slot)."""
    if ref.is_torch:
        import torch

        out = torch.empty_like(ref.obj, dtype=src.obj.dtype)
        out.copy_(src.obj)
        return out
    import numpy as np

    out_np = np.empty_like(ref.obj, dtype=src.obj.dtype)
    np.copyto(out_np, src.obj)
    return out_np


def _index_of(index: Sequence[int] | None) -> Callable[[int], int]:
    """Entry ``i`` of a part's lists as the caller's index (for error messages)."""
    return (lambda i: i) if index is None else index.__getitem__


def prepare(
    op: str,
    slots: Sequence[tuple[str, Sequence[Any]]],
    written: Sequence[str],
    free_dtype: Sequence[str] = (),
    mismatches: list[tuple[int, int]] | None = None,
    codes: Sequence[str] = (),
    index: Sequence[int] | None = None,
) -> Sequence[Buffer | None]:
    """Check every list; return nothing written yet. See :func:`group`.

    ``free_dtype``: slots whose dtype may differ from the params' (state kept in another
    dtype, master copies); :meth:`LowPrecision.check` says which dtypes they may have, from
    the (slot, index) pairs whose dtype differs, appended to ``mismatches``. ``codes``: slots
    that may hold uint8 codes (8-bit state). ``index``: the caller's index of each entry, for
    the messages, where the lists are a part of the caller's (identity if None).
    Returns the flat list of buffers, slot-major: ``buffers[d * n + i]``.
    """
    names = [name for name, _ in slots]
    at = _index_of(index)
    n = len(slots[0][1])
    for name, values in slots[1:]:
        if len(values) != n:
            raise ValueError(
                f"{op}: expected one entry of {name} per entry of {names[0]}, got "
                f"{len(values)} {name} for {n} {names[0]}"
            )
    written_set = set(written)
    plain = _buffers.prepare_plain(slots, written_set)
    if plain is not None:
        return plain
    free_set = set(free_dtype)
    codes_set = set(codes)
    fast = _buffers._fast_torch_buffer
    buffers: list[Buffer | None] = []
    for name, values in slots:
        writable = name in written_set
        is_codes = name in codes_set
        for i, x in enumerate(values):
            if x is None:
                buffers.append(None)
            else:  # the message is only formatted on the full (slow, or failing) path
                b = fast(x, writable)
                buffers.append(
                    b
                    if b is not None
                    else _buffers.as_buffer(
                        x, f"{op}: {name}[{at(i)}]", writable=writable, codes=is_codes
                    )
                )
    for d, (name, _) in enumerate(slots[1:], start=1):
        for i in range(n):
            ref, other = buffers[i], buffers[d * n + i]
            if other is None or ref is None:
                continue
            if not (
                other.shape == ref.shape
                and (other.dtype == ref.dtype or name in free_set)
                and other.device == ref.device
                and other.is_torch == ref.is_torch
                and other.sharding == ref.sharding
            ):
                _buffers.check_same_layout(
                    ref._replace(dtype=other.dtype) if name in free_set else ref,
                    f"{names[0]}[{at(i)}]",
                    other,
                    f"{op}: {name}[{at(i)}]",
                )
            if other.dtype != ref.dtype and mismatches is not None:
                mismatches.append((d, i))
            if other.strides != ref.strides:
                if name in written_set:
                    raise LayoutMismatch(
                        f"{op}: {name}[{at(i)}] has strides {other.strides} but {names[0]}[{at(i)}] "
                        f"has strides {ref.strides}; tensors updated in place must share the "
                        f"params' memory layout"
                    )
                buffers[d * n + i] = _buffers.as_buffer(
                    _copy_like(ref, other), f"{op}: {name}[{at(i)}]", writable=False
                )
    written_slots = [name in written_set for name in names]
    clash = _buffers.find_overlap(buffers, lambda k: written_slots[k // n] if n else False)
    if clash is not None:
        first, second = (f"{op}: {names[k // n]}[{at(k % n)}]" for k in clash)
        _buffers.raise_overlap(first, second)
    return buffers


def group(
    buffers: Sequence[Buffer | None],
    depth: int,
    n: int,
    keys: Sequence[Any] | None = None,
    state_slot: int | None = None,
    extra_slot: int | None = None,
    native: bool = False,
) -> list[Group]:
    """Group the tensors of a prepared call by (device, dtype[, state dtype][, key]): one
    native call each.

    Every one of the first ``depth`` slots must be present (not None) for every tensor.
    ``keys`` splits groups further (e.g. first momentum step or not). ``state_slot``: the slot
    whose dtype is the group's state dtype, or None. ``extra_slot``: the last slot, holding a
    policy's extra list (master copies) whose entries may be None (float32/float64 params):
    tensors without one form groups of their own, without that slot. ``native``: the caller
    passes :attr:`Group.prepared` to a binding that takes it (``optimizer_step``).
    """
    if (
        isinstance(buffers, _buffers.PreparedList)
        and n
        and depth == buffers.depth
        and state_slot is None
        and extra_slot is None
        and (keys is None or all(k == keys[0] for k in keys))
    ):
        # The usual optimizer step, checked natively: every tensor present, on one device, in
        # one dtype. Its addresses stay native (see bindings/buffers.cpp).
        uniform = buffers.uniform()
        if uniform is not None:
            device, dtype_code = uniform
            if native:
                return [Group(device, dtype_code, list(range(n)), prepared=buffers)]
            slots, numels = buffers.pointer_lists(depth)
            return [Group(device, dtype_code, list(range(n)), slots=slots, numels=numels)]
    present = [b for b in buffers[: depth * n] if b is not None]
    if n and len(present) == depth * n and _one_group(present[:n], keys):
        # The usual optimizer step: every tensor on one device, in one dtype (and one state
        # dtype, every extra present).
        state_code = _uniform_state_code(present, n, state_slot)
        if state_code is not None:
            ref0 = present[0]
            slots = [[b.ptr for b in present[d * n : (d + 1) * n]] for d in range(depth)]
            numels = [b.numel for b in present[:n]]
            return [
                Group(
                    ref0.device,
                    ref0.dtype_code,
                    list(range(n)),
                    state_dtype_code=state_code,
                    has_extra=extra_slot is not None,
                    slots=slots,
                    numels=numels,
                )
            ]
    groups: dict[tuple[Any, ...], Group] = {}
    for i in range(n):
        ref = buffers[i]
        assert ref is not None
        state_code = -1
        if state_slot is not None:
            state = buffers[state_slot * n + i]
            assert state is not None
            if state.dtype_code != ref.dtype_code:
                state_code = state.dtype_code
        has_extra = extra_slot is not None and buffers[extra_slot * n + i] is not None
        key = (
            ref.device,
            ref.dtype_code,
            state_code,
            has_extra,
            None if keys is None else keys[i],
        )
        g = groups.get(key)
        if g is None:
            used = depth if extra_slot is None or has_extra else depth - 1
            g = groups[key] = Group(ref.device, ref.dtype_code, slots=[[] for _ in range(used)])
            g.state_dtype_code = state_code
            g.has_extra = has_extra
        g.indices.append(i)
        g.numels.append(ref.numel)
        for d in range(len(g.slots)):
            b = buffers[d * n + i]
            assert b is not None
            g.slots[d].append(b.ptr)
    return list(groups.values())


# Param policies of the native calls (gf::ParamPolicy in gradfuse/tensor_list.h).
_POLICY = _native.codes("param_policy")
_NEAREST, _STOCHASTIC = _POLICY["nearest"], _POLICY["stochastic"]
_KAHAN, _MASTER = _POLICY["kahan"], _POLICY["master"]
_MASK64 = (1 << 64) - 1


def mix_seed(seed: int, salt: int) -> int:
    """A 64-bit seed for one native call from a user seed and a salt (splitmix64)."""
    z = (seed + (salt + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@dataclass
class LowPrecision:
    """How a functional update stores its tensors (issue 8): the keyword-only options every
    functional optimizer takes, validated before anything is written.

    ``master_params``: one float32 master copy per (float16/bfloat16) param. The rule reads and
    updates the master in float32 and the param receives its round-to-nearest copy, in the
    same pass. ``kahan_comps``: one bfloat16 compensation buffer per bfloat16 param (Kahan-
    compensated update; zeros to start). ``rounding``: ``"nearest"`` or ``"stochastic"``
    (bfloat16 params without master copies; ``seed``, an int in [0, 2**64), picks the random
    bits, which depend only on (seed, tensor index, element index): change it every call).
    State tensors (every list after ``grads``) may be float32 for float16/bfloat16 params, or
    bfloat16 for float32 params: they are computed in float32 and stored in their own dtype.
    ``state_absmax`` (8-bit state, float32/float16/bfloat16 params, CPU or CUDA): one list per state
    list, in slot order, of float32 tensors of ceil(numel / 256) values; where a param's state
    tensors are uint8 (all of them), they are block-wise codes and these their absmax
    (:mod:`gradfuse.optim._quant8`); entries of params whose state is float are ignored (None).
    """

    master_params: Sequence[Any] | None = None
    kahan_comps: Sequence[Any] | None = None
    rounding: str = "nearest"
    seed: int | None = None
    state_absmax: Sequence[Sequence[Any]] | None = None
    signed: list[bool] = field(default_factory=list)  # per state slot: the signed map (8-bit)
    index: Sequence[int] | None = None  # the caller's index of each entry (messages): see prepare
    _absmax: dict[tuple[int, int], Buffer] = field(default_factory=dict, init=False)
    _policy: int = field(default=_NEAREST, init=False)
    _depth: int = field(default=0, init=False)
    _state_slot: int | None = field(default=None, init=False)
    _extra_slot: int | None = field(default=None, init=False)
    _names: list[str] = field(default_factory=list, init=False)
    mismatches: list[tuple[int, int]] = field(default_factory=list, init=False)

    def policy(self, op: str) -> int:
        """The native param policy; refuses contradictory options."""
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(
                f"{op}: rounding must be 'nearest' or 'stochastic', got {self.rounding!r}"
            )
        stochastic = self.rounding == "stochastic"
        chosen = [
            name
            for name, on in (
                ("master_params", self.master_params is not None),
                ("kahan_comps", self.kahan_comps is not None),
                ("rounding='stochastic'", stochastic),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"{op}: {' and '.join(chosen)} cannot be combined; pick one way to keep "
                f"low-precision updates (master copies, Kahan compensation or stochastic "
                f"rounding)"
            )
        if stochastic:
            if self.seed is None or not isinstance(self.seed, int) or not 0 <= self.seed <= _MASK64:
                raise ValueError(
                    f"{op}: rounding='stochastic' needs seed, an int in [0, 2**64), got "
                    f"{self.seed!r}"
                )
            return _STOCHASTIC
        if self.master_params is not None:
            return _MASTER
        if self.kahan_comps is not None:
            return _KAHAN
        return _NEAREST

    def extend(
        self, op: str, slots: list[tuple[str, Sequence[Any]]]
    ) -> tuple[list[tuple[str, Sequence[Any]]], list[str]]:
        """The slots with the policy's extra list appended, and the names whose dtype may
        differ from the params' (for :func:`prepare`, with ``mismatches=self.mismatches``)."""
        self._policy = self.policy(op)
        self._state_slot = 2 if len(slots) > 2 else None
        self._extra_slot = len(slots) if self._policy in (_MASTER, _KAHAN) else None
        free = [name for name, _ in slots[2:]]
        if self.master_params is not None:
            slots = [*slots, ("master_params", self.master_params)]
            free.append("master_params")
        elif self.kahan_comps is not None:
            slots = [*slots, ("kahan_comps", self.kahan_comps)]
        self._depth = len(slots)
        self._names = [name for name, _ in slots]
        return slots, free

    def prepare_buffers(
        self, op: str, slots: list[tuple[str, Sequence[Any]]], written: tuple[str, ...]
    ) -> tuple[Sequence[Buffer | None], int]:
        """:func:`prepare` for ``slots`` (``slots[0]`` the params) with the policy's extra
        list (:meth:`extend`) and dtype checks (:meth:`check`): the buffers, and the number of
        pointer lists for :func:`group`. ``written``: the caller's written slot names."""
        n = len(slots[0][1])
        slots, free = self.extend(op, slots)
        buffers = prepare(
            op,
            slots,
            written=(*written, *self.written),
            free_dtype=free,
            mismatches=self.mismatches,
            codes=free,
            index=self.index,
        )
        self.check(op, buffers, n)
        return buffers, len(slots)

    @property
    def layout(self) -> tuple[int | None, int | None]:
        """(state slot, extra slot) for :func:`group`: no state slot when every state tensor
        has its param's dtype (grouping then looks at nothing more than before)."""
        state_slot = (
            self._state_slot if any(d != self._extra_slot for d, _ in self.mismatches) else None
        )
        return state_slot, self._extra_slot

    @property
    def is_default(self) -> bool:
        """After :meth:`check`: no policy, every state tensor in its param's dtype."""
        return self._policy == _NEAREST and not self.mismatches

    @property
    def written(self) -> tuple[str, ...]:
        return ("master_params", "kahan_comps")

    def check(self, op: str, buffers: Sequence[Buffer | None], n: int) -> None:
        """Every dtype against the policy, before anything is written. Costs nothing more
        than :func:`prepare` for a default call (no policy, state in the params' dtype)."""
        extra = self._extra_slot
        at = _index_of(self.index)
        for d, i in self.mismatches:
            if d == extra:
                continue  # master copies: checked below
            p, s = buffers[i], buffers[d * n + i]
            assert p is not None
            assert s is not None
            if s.dtype == _buffers.CODES_DTYPE:
                self._check_codes(op, buffers, n, d, i)
                continue
            ok = (p.dtype in ("float16", "bfloat16") and s.dtype == "float32") or (
                p.dtype == "float32" and s.dtype == "bfloat16"
            )
            first = buffers[2 * n + i]
            if not ok or (first is not None and first.dtype != s.dtype):
                raise TypeError(
                    f"{op}: {self._names[d]}[{at(i)}] has dtype {s.dtype} but {self._names[0]}[{at(i)}] "
                    f"has dtype {p.dtype} (both {tuple(p.shape)} on {p.device_str}); expected "
                    f"the same dtype, or float32 state for float16/bfloat16 params, or bfloat16 "
                    f"state for float32 params (one state dtype per param)"
                )
        if self._policy == _NEAREST:
            return
        for i in range(n):
            p = buffers[i]
            if p is None:
                continue
            if self._policy == _MASTER:
                assert extra is not None
                m = buffers[extra * n + i]
                if p.dtype not in ("float16", "bfloat16"):
                    if m is not None:
                        raise TypeError(
                            f"{op}: master_params[{at(i)}] must be None: params[{at(i)}] "
                            f"({p.describe()}) is updated in its own precision (master copies "
                            f"are for float16/bfloat16 params)"
                        )
                    continue
                if m is None or m.dtype != "float32":
                    raise TypeError(
                        f"{op}: master_params[{at(i)}] must be a float32 tensor like params[{at(i)}] "
                        f"({p.describe()}), got {'None' if m is None else m.describe()}"
                    )
            elif p.dtype != "bfloat16":
                what = "kahan_comps" if self._policy == _KAHAN else "rounding='stochastic'"
                raise TypeError(
                    f"{op}: {what} is for bfloat16 params; params[{at(i)}] is {p.describe()}"
                )
            elif self._policy == _KAHAN:
                assert extra is not None
                if buffers[extra * n + i] is None:
                    raise TypeError(
                        f"{op}: kahan_comps[{at(i)}] is None; expected a bfloat16 tensor"
                    )

    def _check_codes(
        self, op: str, buffers: Sequence[Buffer | None], n: int, d: int, i: int
    ) -> None:
        """Slot ``d`` of param ``i`` holds uint8 codes: every state slot of the param must, and
        each needs its absmax (float32, one value per 256 elements, on the param's device)."""
        p, s = buffers[i], buffers[d * n + i]
        assert p is not None
        assert s is not None
        name = self._names[d]
        at = _index_of(self.index)
        where = f"{op}: {name}[{at(i)}]"
        if self.state_absmax is None:
            raise TypeError(
                f"{where} holds uint8 codes ({s.describe()}) but no state_absmax was given; 8-bit "
                f"state needs one absmax list per state list"
            )
        if p.dtype not in ("float32", "float16", "bfloat16"):
            raise TypeError(
                f"{where}: 8-bit state needs float32/float16/bfloat16 params, params[{at(i)}] is "
                f"{p.describe()}"
            )
        first = buffers[2 * n + i]
        if first is None or first.dtype != s.dtype:
            raise TypeError(
                f"{where} holds uint8 codes but {self._names[2]}[{at(i)}] does not ({first and first.describe()}); "
                f"8-bit state is all of a param's state or none of it"
            )
        k = d - 2
        lists = self.state_absmax
        if k >= len(lists) or len(lists[k]) != n:
            raise ValueError(
                f"{op}: state_absmax needs one list of {n} entries per state list; got "
                f"{len(lists)} lists" + (f", list {k} of {len(lists[k])}" if k < len(lists) else "")
            )
        a = _buffers.as_buffer(lists[k][i], f"{op}: state_absmax[{k}][{at(i)}]", writable=True)
        want = -(-p.numel // 256)
        if (
            a.dtype != "float32"
            or a.numel != want
            or a.device != p.device
            or (a.numel > 1 and a.strides[-1] != 1)
            or len(a.shape) != 1
        ):
            raise ValueError(
                f"{op}: state_absmax[{k}][{at(i)}] must be a contiguous float32 vector of {want} "
                f"values (one per 256 elements of {name}[{at(i)}], {s.describe()}) on "
                f"{p.device_str}, got {a.describe()}"
            )
        self._absmax[(d, i)] = a

    def absmax_slots(self, g: Group) -> list[list[int]]:
        """The absmax pointer lists of an 8-bit group (appended to its slots), else none."""
        if not self._absmax or g.state_dtype_code != _buffers.state_q8_code():
            return []
        depth = len(g.slots) - (1 if g.has_extra else 0)
        return [[self._absmax[(d, i)].ptr for i in g.indices] for d in range(2, depth)]

    def kwargs(self, g: Group, salt: int) -> dict[str, int]:
        """The storage keyword arguments of one native call (``salt``: the call's ordinal, so
        two calls of one step draw different random bits)."""
        seed = 0
        if self._policy == _STOCHASTIC:
            assert self.seed is not None
            seed = mix_seed(self.seed, salt)
        policy = self._policy
        if policy == _MASTER and not g.has_extra:
            policy = _NEAREST  # float32/float64 params of a master-weights call
        state_dtype = g.state_dtype_code
        if self._absmax and state_dtype == _buffers.state_q8_code():
            state_dtype += sum(1 << k for k, signed in enumerate(self.signed) if signed)
        return {"state_dtype": state_dtype, "policy": policy, "seed": seed}


def _uniform_state_code(present: Sequence[Buffer], n: int, state_slot: int | None) -> int | None:
    """The group's state dtype code when every state buffer has the same one (-1: the params'
    dtype, as :func:`group` encodes it), None when they differ."""
    if state_slot is None:
        return -1
    codes = {b.dtype_code for b in present[state_slot * n : (state_slot + 1) * n]}
    if len(codes) != 1:
        return None
    code = codes.pop()
    return -1 if code == present[0].dtype_code else code


def _one_group(refs: Sequence[Buffer], keys: Sequence[Any] | None) -> bool:
    """Whether the params' buffers share one device, one dtype and one key."""
    device, dtype = refs[0].device, refs[0].dtype
    if not all(b.device == device and b.dtype == dtype for b in refs):
        return False
    return keys is None or all(k == keys[0] for k in keys)
