"""No leaks: 10,000 optimizer steps (every optimizer class and functional in the registry) and
10,000 loss calls (every loss) in one process leave resident memory, malloc'd bytes, Python
objects and allocated blocks flat after a warm-up.

The bounds are generous against noise and tight against a leak of anything per call: a leaked
16 KiB tensor per call is 160 MB, a leaked Python object per call is 10,000 objects, and a leaked
64-byte pointer table in the native layer is 640 KB of malloc'd memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from reliability_registry import (
    LOSSES,
    OPTIMIZERS,
    LossSpec,
    OptimSpec,
    functional_call,
    require_class,
    tensor_lists,
)

# Under AddressSanitizer freed memory sits in a quarantine (up to 256 MB) before reuse, so
# resident memory grows without any leak: this test is for the normal build.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("GRADFUSE_SANITIZED")),
    reason="memory growth is not a leak signal under AddressSanitizer (quarantine)",
)

CALLS = 10_000
WARMUP = 300
PAGE = os.sysconf("SC_PAGE_SIZE")
SIZES = (4096, 7, 300)  # 16 KiB, odd, small: a leaked buffer of the first shows at once

# Growth allowed over CALLS calls (see the module docstring for what a real leak costs).
MAX_RSS_GROWTH = 24 << 20
MAX_MALLOC_GROWTH = 384 << 10
MAX_GC_OBJECTS_GROWTH = 200
MAX_BLOCKS_GROWTH = 2000


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _malloc_in_use() -> int | None:
    """Bytes in use in glibc's malloc (mallinfo2), or None where that does not exist or a
    sanitizer replaced malloc."""
    if os.environ.get("GRADFUSE_SANITIZED"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    return int(info.uordblks + info.hblkhd)


@dataclass
class Usage:
    rss: int
    malloc: int | None
    objects: int
    blocks: int


def _usage() -> Usage:
    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return Usage(rss, _malloc_in_use(), len(gc.get_objects()), sys.getallocatedblocks())


def assert_flat(call: Callable[[], Any], what: str) -> None:
    for _ in range(WARMUP):
        call()
    before = _usage()
    for _ in range(CALLS):
        call()
    after = _usage()
    growth = (
        f"{what}: after {CALLS} calls rss {after.rss - before.rss:+d} B, malloc "
        f"{(after.malloc or 0) - (before.malloc or 0):+d} B, gc objects "
        f"{after.objects - before.objects:+d}, blocks {after.blocks - before.blocks:+d}"
    )
    print(growth)
    assert after.rss - before.rss < MAX_RSS_GROWTH, growth
    if before.malloc is not None and after.malloc is not None:
        assert after.malloc - before.malloc < MAX_MALLOC_GROWTH, growth
    assert after.objects - before.objects < MAX_GC_OBJECTS_GROWTH, growth
    assert after.blocks - before.blocks < MAX_BLOCKS_GROWTH, growth


def _round_robin(calls: list[Callable[[], Any]]) -> Callable[[], None]:
    """One call of the next op in turn: CALLS calls in all, shared by the ops of this build."""
    state = {"k": 0}

    def call() -> None:
        calls[state["k"] % len(calls)]()
        state["k"] += 1

    return call


def test_optimizer_steps_do_not_leak() -> None:
    steps = []
    for spec in OPTIMIZERS:
        for config in spec.configs:
            params = [torch.randn(n, requires_grad=True) for n in SIZES]
            for p in params:
                p.grad = torch.randn(p.shape) * 1e-3
            steps.append(require_class(spec)(params, **config).step)
    assert_flat(_round_robin(steps), "optimizer steps")


def _numpy_call(spec: OptimSpec) -> Callable[[], None]:
    # numpy arrays: a different path through _buffers than torch tensors.
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
    grads = [rng.standard_normal(n).astype(np.float32) * 1e-3 for n in SIZES]
    state = tensor_lists(spec, [torch.from_numpy(p) for p in params])
    state = {
        k: [x.numpy() if isinstance(x, torch.Tensor) and x.dim() else x for x in v]
        for k, v in state.items()
    }
    return functional_call(spec, params, grads, state)


def test_functional_calls_do_not_leak() -> None:
    assert_flat(_round_robin([_numpy_call(s) for s in OPTIMIZERS]), "functional calls")


def _loss_call(spec: LossSpec, config: dict[str, Any], layer: str) -> Callable[[], None]:
    x, t = spec.make((64, 33), torch.float32)
    if layer == "with_grad":
        fn = spec.require_with_grad()

        def call() -> None:
            fn(x, t, **config)

        return call
    f = spec.require_fn()
    xr = x.clone().requires_grad_(True)

    def backward() -> None:
        loss = f(xr, t, **config)
        (loss.sum() if loss.dim() else loss).backward()
        xr.grad = None

    return backward


@pytest.mark.parametrize("layer", ["with_grad", "autograd"])
def test_loss_calls_do_not_leak(layer: str) -> None:
    calls = [_loss_call(spec, config, layer) for spec in LOSSES for config in spec.configs]
    assert_flat(_round_robin(calls), f"loss calls ({layer})")
