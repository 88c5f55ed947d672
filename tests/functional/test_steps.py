"""Step counters: the native increment (_core.increment_counters) against torch's own ``+= 1``."""

from __future__ import annotations

import pytest
import torch

from gradfuse import _buffers
from gradfuse._native import core
from gradfuse.functional import _steps


@pytest.fixture(autouse=True)
def _torch_types_registered(layout_reader: str) -> None:
    # Both ways of reading a counter's layout (conftest.layout_reader), types registered.
    _buffers.as_buffer(torch.zeros(1), "x", writable=False)  # what the first step does


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_increment_equals_torch(dtype: torch.dtype) -> None:
    # 2**24 + 1 is not a float32: the counter rounds as torch's float32 `step += 1` rounds.
    start = [0.0, 7.0, 2.0**24, 123456.0]
    ours = [torch.tensor(v, dtype=dtype) for v in start] + [torch.ones(1, 1, dtype=dtype)]
    theirs = [t.clone() for t in ours]
    values = core().increment_counters(ours)
    torch._foreach_add_(theirs, 1)
    assert values == [float(t.item()) for t in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
        assert a.dtype == b.dtype
        assert a.shape == b.shape


def test_counter_listed_twice_is_advanced_twice() -> None:
    c = torch.tensor(3.0)
    assert core().increment_counters([c, c]) == [5.0, 5.0]
    assert _steps.increment_all([c, c]) == [7.0, 7.0]


@pytest.mark.parametrize(
    "odd",
    [
        torch.tensor(1, dtype=torch.int64),
        torch.tensor(1.0, dtype=torch.bfloat16),
        torch.zeros(2),
        torch.tensor(1.0, requires_grad=True),
        torch.tensor(1.0)._neg_view(),
        torch.nn.Parameter(torch.tensor(1.0), requires_grad=False),
    ],
    ids=["int64", "bfloat16", "two-elements", "requires-grad", "neg-view", "parameter"],
)
def test_anything_else_falls_back_and_writes_nothing(odd: torch.Tensor) -> None:
    plain = torch.tensor(4.0)
    before = odd.detach().clone()
    assert core().increment_counters([plain, odd]) is None
    assert plain.item() == 4.0  # nothing written: the Python path will do it all
    assert torch.equal(odd.detach(), before)


def test_increment_all_uses_either_path_with_the_same_result() -> None:
    native = [torch.tensor(1.0), torch.tensor(2.0)]
    mixed = [torch.tensor(1.0), torch.tensor(2, dtype=torch.int64)]  # the foreach path
    assert _steps.increment_all(native) == [2.0, 3.0]
    assert _steps.increment_all(mixed) == [2.0, 3.0]
    assert mixed[1].dtype == torch.int64
    assert mixed[1].item() == 3


def test_read_only_numpy_counter_is_refused_before_any_counter_moves() -> None:
    # The counters advance one by one after every other check: a read-only one found then had
    # already let the ones before it advance (and raised numpy's message, naming nothing).
    import numpy as np

    from gradfuse.functional import adam_

    params = [np.random.default_rng(0).standard_normal(5).astype(np.float32) for _ in range(2)]
    grads = [np.ones(5, np.float32) for _ in range(2)]
    state = [[np.zeros(5, np.float32) for _ in range(2)] for _ in range(2)]
    read_only = np.array(0.0)
    read_only.flags.writeable = False
    steps = [np.array(0.0), read_only]
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match=r"adam_: state_steps\[1\] is a read-only numpy array"):
        adam_(params, grads, state[0], state[1], state_steps=steps, lr=0.1)
    assert float(steps[0]) == 0.0
    assert all(np.array_equal(p, b) for p, b in zip(params, before, strict=True))
