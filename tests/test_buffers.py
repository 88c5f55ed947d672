"""gradfuse._buffers.prepare_plain: the native fast path of the multi-tensor checks.

It may only ever accept what the Python checks accept, and must then return the very same
buffers; anything else must send the call down the Python path (which words the errors).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from gradfuse import _buffers
from gradfuse.functional import _multi_tensor

Slots = list[tuple[str, Sequence[Any]]]
WRITTEN = {"params", "bufs"}

# Every test here runs with both ways of reading a tensor's layout (conftest.layout_reader).
pytestmark = pytest.mark.usefixtures("layout_reader")


def _python_prepare(slots: Slots, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as m:
        m.setattr(_buffers, "prepare_plain", lambda *a: None)
        return _multi_tensor.prepare("t", slots, tuple(WRITTEN))


def _native(slots: Slots) -> list[Any] | None:
    # The types are registered when the Python path first meets a torch tensor.
    _buffers.as_buffer(torch.zeros(1), "warm-up", writable=False)
    return _buffers.prepare_plain(slots, WRITTEN)


def _slots(n: int = 3, shape: tuple[int, ...] = (5, 7), dtype: Any = torch.float32) -> Slots:
    params = [torch.nn.Parameter(torch.randn(shape).to(dtype)) for _ in range(n)]
    grads = [torch.randn(shape).to(dtype) for _ in range(n)]
    bufs: list[Any] = [torch.randn(shape).to(dtype) for _ in range(n)]
    return [("params", params), ("grads", grads), ("bufs", bufs)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "shape", [(), (1,), (7,), (4097,), (0,), (5, 7, 3), (3, 1, 4), (1, 1), (2, 0, 3)]
)
def test_accepts_plain_tensors_with_the_python_paths_buffers(
    dtype: Any, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    slots = _slots(shape=shape, dtype=dtype)
    slots[2][1][1] = None  # type: ignore[index]  # a state buffer not created yet
    fast = _native(slots)
    slow = _python_prepare(slots, monkeypatch)
    assert fast is not None
    assert len(fast) == len(slow) == 9
    for f, s in zip(fast, slow, strict=True):
        if s is None:
            assert f is None
            continue
        assert type(f) is _buffers.Buffer
        assert f.obj is s.obj
        assert tuple(f)[1:] == tuple(s)[1:]


def _neg_view() -> Slots:
    slots = _slots()
    slots[1][1][0] = torch._neg_view(torch.randn(5, 7))  # type: ignore[index]
    return slots


def _replace(slot: int, make: Callable[[], Any]) -> Callable[[], Slots]:
    def build() -> Slots:
        slots = _slots()
        slots[slot][1][0] = make()  # type: ignore[index]
        return slots

    return build


class _Sub(torch.Tensor):
    pass


def _nested() -> Any:
    # Contiguous, on the CPU, with a data pointer, but its .shape raises.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The PyTorch API of nested tensors", UserWarning)
        return torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])


def _aliased() -> Slots:
    slots = _slots()
    slots[2][1][2] = slots[0][1][2]  # type: ignore[index]  # a buffer that is its own param
    return slots


def _strided_grad() -> Slots:
    # Contiguous, same shape, other strides (a size-1 dim): the Python path copies it.
    slots = _slots(shape=(5, 1))
    slots[1][1][0] = torch.randn(5, 3)[:, :1].clone().as_strided((5, 1), (1, 7))  # type: ignore[index]
    return slots


FALLBACKS: dict[str, Callable[[], Slots]] = {
    "non-contiguous param": _replace(0, lambda: torch.randn(7, 5).t()),
    "negative view": _neg_view,
    "written non-leaf": _replace(2, lambda: torch.randn(5, 7, requires_grad=True) * 2),
    "subclass": _replace(1, lambda: torch.randn(5, 7).as_subclass(_Sub)),
    "numpy": _replace(1, lambda: np.zeros((5, 7), np.float32)),
    "int dtype": _replace(1, lambda: torch.zeros(5, 7, dtype=torch.int32)),
    "complex dtype": _replace(1, lambda: torch.zeros(5, 7, dtype=torch.complex64)),
    "other dtype": _replace(1, lambda: torch.randn(5, 7, dtype=torch.float64)),
    "other shape": _replace(1, lambda: torch.randn(7, 5)),
    "sparse": _replace(1, lambda: torch.randn(5, 7).to_sparse()),
    "meta": _replace(1, lambda: torch.empty(5, 7, device="meta")),
    "nested": _replace(1, _nested),
    "not a tensor": _replace(1, lambda: "grad"),
    "missing param": _replace(0, lambda: None),
    "aliased": _aliased,
    "other strides": _strided_grad,
    "nine dimensions": lambda: _slots(shape=(1, 2, 1, 1, 3, 1, 1, 1, 2)),  # more than native keeps
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_anything_unusual_goes_down_the_python_path(case: str) -> None:
    slots = FALLBACKS[case]()
    objects = [x for _, values in slots for x in values if x is not None]
    before = [sys.getrefcount(x) for x in objects]
    assert _native(slots) is None
    # Nothing taken and not given back (the Buffers built before the refusal are freed).
    assert [sys.getrefcount(x) for x in objects] == before


def test_views_into_one_storage_keep_their_own_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    # Disjoint slices of one tensor (a storage offset each) and a 0-dim element of another.
    flat = torch.randn(60)
    params = [torch.nn.Parameter(flat[0:7]), torch.nn.Parameter(flat[7:20].view(13, 1))]
    grads = [torch.randn(80)[3:10], torch.randn(13, 1)]
    bufs: list[Any] = [flat[20:27], flat[40:53].view(13, 1)]
    slots: Slots = [("params", params), ("grads", grads), ("bufs", bufs)]
    fast = _native(slots)
    slow = _python_prepare(slots, monkeypatch)
    assert fast is not None
    assert (
        [b.ptr for b in fast]
        == [b.ptr for b in slow]
        == [t.data_ptr() for _, values in slots for t in values]
    )
    assert [tuple(f)[1:] for f in fast] == [tuple(s)[1:] for s in slow]


def test_lists_of_other_lengths_go_down_the_python_path() -> None:
    slots = _slots()
    slots[1] = ("grads", slots[1][1][:2])
    assert _native(slots) is None


def test_buffers_hold_their_tensors_and_release_them() -> None:
    slots = _slots()
    t = slots[0][1][0]
    before = sys.getrefcount(t)
    out = _native(slots)
    assert out is not None
    assert sys.getrefcount(t) == before + 1
    del out
    assert sys.getrefcount(t) == before


def test_prepared_list_is_a_read_only_sequence_of_the_buffers() -> None:
    slots = _slots(n=4)
    slots[2][1][3] = None  # type: ignore[index]
    out = _native(slots)
    assert out is not None
    assert isinstance(out, Sequence)
    assert len(out) == 12
    assert out[-1] is None
    assert out[-12].obj is slots[0][1][0]
    assert [b.obj for b in out[4:9:2]] == [slots[1][1][0], slots[1][1][2], slots[2][1][0]]
    with pytest.raises(IndexError):
        out[12]
    assert out.none_in(8, 12)
    assert not out.none_in(0, 11)
    assert out.uniform() is None  # a None entry: not one native call as it is
    full = _native(_slots(n=4))
    assert full is not None
    assert full.uniform() == (-1, _buffers.DTYPE_CODES["float32"])
    pointers, numels = full.pointer_lists(2)
    assert pointers == [[b.ptr for b in full[0:4]], [b.ptr for b in full[4:8]]]
    assert numels == [35] * 4


@pytest.mark.parametrize("amsgrad", [False, True])
def test_a_step_through_the_prepared_list_equals_the_python_paths(
    amsgrad: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine hands the PreparedList to optimizer_step whole; the Python path hands it
    # pointer lists. Same kernel, same tensors: the same bits.
    from gradfuse.functional import adamw_

    torch.manual_seed(0)
    shapes = [(1,), (7,), (4097,), (0,), (3, 5)]
    params = [torch.randn(s) for s in shapes]
    grads = [torch.randn(s) for s in shapes]
    state = [[torch.rand(s) for s in shapes] for _ in range(3)]
    _buffers.as_buffer(torch.zeros(1), "warm-up", writable=False)  # registers the types
    native = _buffers.prepare_plain
    prepared: list[Any] = []
    results = []
    for python_path in (False, True):
        with monkeypatch.context() as m:
            if python_path:
                m.setattr(_buffers, "prepare_plain", lambda *a: None)
            else:
                m.setattr(
                    _buffers,
                    "prepare_plain",
                    lambda *a: prepared.append(native(*a)) or prepared[-1],
                )
            p = [x.clone() for x in params]
            s = [[x.clone() for x in lst] for lst in state]
            steps = [torch.tensor(3.0) for _ in shapes]
            adamw_(p, grads, *s[:2], s[2] if amsgrad else None, state_steps=steps, amsgrad=amsgrad)
            results.append([*p, *s[0], *s[1], *s[2]])
    assert prepared
    assert all(isinstance(x, _buffers.PreparedList) for x in prepared)
    for fast, slow in zip(*results, strict=True):
        assert torch.equal(fast, slow)
