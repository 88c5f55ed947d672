"""Bitwise determinism and thread safety, for every optimizer, loss and norm in the registry.

* The same inputs give the same bits on every run and for every thread count (1, the cores
  available, and more threads than cores): a reduction sums fixed blocks in a fixed order and an
  elementwise update does not depend on who computes which element (DESIGN.md §4).
* Several Python threads stepping independent optimizers and computing losses at the same time
  (the GIL is released inside the kernels, and each calling thread gets its own OpenMP team)
  give the same bits as running the same work one after another.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from reliability_registry import (
    LOSSES,
    OPTIMIZERS,
    LossSpec,
    OptimSpec,
    loss_and_grad,
    loss_params,
    optim_params,
    require,
    require_class,
)

import gradfuse

# Sizes that make every call multi-threaded (the engine only splits above 2^15 elements), plus
# odd sizes and an empty tensor so that split points fall inside tensors and between them.
SHAPES: list[tuple[int, ...]] = [(1 << 17,), (4097,), (7,), (0,), (300, 257)]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
THREAD_COUNTS = sorted({1, CORES, CORES + 1})


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    old = gradfuse.get_num_threads()
    gradfuse.set_num_threads(n)
    try:
        yield
    finally:
        gradfuse.set_num_threads(old)


def _bits(x: Any) -> bytes:
    if isinstance(x, torch.Tensor):
        return x.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return repr(x).encode()


def _state_bits(opt: torch.optim.Optimizer) -> list[bytes]:
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            out.append(_bits(p))
            for k in sorted(opt.state[p]):
                out.append(_bits(opt.state[p][k]))
    return out


def _optimizer_run(
    spec: OptimSpec, config: dict[str, Any], seed: int, steps: int = 3
) -> list[bytes]:
    """Final params and state, as bytes, after ``steps`` steps on fixed gradients."""
    cls = require_class(spec)
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).requires_grad_(True) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]
    opt = cls(params, **config)
    for step_grads in grads:
        for p, gr in zip(params, step_grads, strict=True):
            p.grad = gr
        opt.step()
    return _state_bits(opt)


@pytest.mark.parametrize(("spec", "config"), optim_params(all_configs=True))
def test_optimizer_bitwise_across_runs_and_thread_counts(
    spec: OptimSpec, config: dict[str, Any]
) -> None:
    results = {}
    for n in THREAD_COUNTS:
        with num_threads(n):
            results[n] = _optimizer_run(spec, config, seed=11)
    again = _optimizer_run(spec, config, seed=11)
    for n, bits in results.items():
        assert bits == results[1], f"{spec.name}: {n} threads differ from 1 thread"
    assert again == results[1], f"{spec.name}: a second run differs"


def _loss_inputs(spec: LossSpec, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # 2^18 elements: several threads' worth of blocks for elementwise and row reductions.
    shape = (4096, 64) if spec.kind in ("class", "kl") else (1 << 18,)
    return spec.make(shape, torch.float32, g)


def _loss_bits(spec: LossSpec, config: dict[str, Any], seed: int) -> list[bytes]:
    x, t = _loss_inputs(spec, seed)
    loss, grad = loss_and_grad(spec, x, t, config)
    return [_bits(torch.as_tensor(loss)), _bits(torch.as_tensor(grad))]


@pytest.mark.parametrize(("spec", "config"), loss_params(all_configs=True))
def test_loss_bitwise_across_runs_and_thread_counts(spec: LossSpec, config: dict[str, Any]) -> None:
    spec.require_with_grad()
    results = {}
    for n in THREAD_COUNTS:
        with num_threads(n):
            results[n] = _loss_bits(spec, config, seed=5)
    again = _loss_bits(spec, config, seed=5)
    for n, bits in results.items():
        assert bits == results[1], f"{spec.name}: {n} threads differ from 1 thread"
    assert again == results[1], f"{spec.name}: a second run differs"


@contextmanager
def cpu_isa(isa: str) -> Iterator[None]:
    core = gradfuse._native.core()
    old = core.cpu_isa()
    core.set_cpu_isa(isa)
    try:
        yield
    finally:
        core.set_cpu_isa(old)


ISAS = gradfuse._native.core().cpu_isas().split(",")


@pytest.mark.parametrize(("spec", "config"), optim_params())
def test_optimizer_bitwise_across_isas(spec: OptimSpec, config: dict[str, Any]) -> None:
    # Every compiled ISA path runs the same rule without contraction (DESIGN.md §4).
    results = {}
    for isa in ISAS:
        with cpu_isa(isa):
            results[isa] = _optimizer_run(spec, config, seed=13)
    for isa, bits in results.items():
        assert bits == results[ISAS[0]], f"{spec.name}: {isa} differs from {ISAS[0]}"


@pytest.mark.parametrize(("spec", "config"), loss_params())
def test_loss_bitwise_across_isas(spec: LossSpec, config: dict[str, Any]) -> None:
    spec.require_with_grad()
    results = {}
    for isa in ISAS:
        with cpu_isa(isa):
            results[isa] = _loss_bits(spec, config, seed=17)
    for isa, bits in results.items():
        assert bits == results[ISAS[0]], f"{spec.name}: {isa} differs from {ISAS[0]}"


def _norm_fns() -> list[Any]:
    def norms(ps: list[torch.Tensor]) -> Any:
        fn = require(getattr(gradfuse, "grad_norms", None), "gradfuse.grad_norms")
        return fn(ps)

    def clip(ps: list[torch.Tensor]) -> Any:
        fn = require(getattr(gradfuse, "clip_grad_norm_", None), "gradfuse.clip_grad_norm_")
        total = fn(ps, max_norm=1.0)
        return [total, *[p.grad for p in ps]]

    def inf_norm(ps: list[torch.Tensor]) -> Any:
        fn = require(getattr(gradfuse, "grad_norms", None), "gradfuse.grad_norms")
        return fn(ps, norm_type=float("inf"))

    return [
        pytest.param(norms, id="grad_norms"),
        pytest.param(clip, id="clip_grad_norm_"),
        pytest.param(inf_norm, id="grad_norms-inf"),
    ]


@pytest.mark.parametrize("fn", _norm_fns())
def test_norms_bitwise_across_runs_and_thread_counts(
    fn: Callable[[list[torch.Tensor]], Any],
) -> None:
    def run() -> list[bytes]:
        g = torch.Generator().manual_seed(3)
        # No empty tensor here: the inf norm of one is an error in torch and in gradfuse.
        ps = [torch.randn(s, generator=g).requires_grad_(True) for s in SHAPES if 0 not in s]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g) * 3
        out = fn(ps)
        return [_bits(x) for x in (out if isinstance(out, list) else [out])]

    results = {}
    for n in THREAD_COUNTS:
        with num_threads(n):
            results[n] = run()
    assert all(r == results[1] for r in results.values())
    assert run() == results[1]


# ---------------------------------------------------------------------------------------------
# Threads


def _work_items() -> list[tuple[str, Callable[[], list[bytes]]]]:
    """Independent pieces of work (one optimizer trajectory or one loss each) for every entry
    of the registry (a missing gradfuse symbol fails in the work item, by require())."""
    items: list[tuple[str, Callable[[], list[bytes]]]] = []
    for k, spec in enumerate(OPTIMIZERS):
        for j, config in enumerate(spec.configs):
            items.append(
                (
                    f"{spec.name}-{j}",
                    lambda spec=spec, config=config, seed=100 * k + j: _optimizer_run(
                        spec, config, seed, steps=4
                    ),
                )
            )
    for k, loss in enumerate(LOSSES):
        for j, config in enumerate(loss.configs):
            items.append(
                (
                    f"{loss.name}-{j}",
                    lambda loss=loss, config=config, seed=1000 + 10 * k + j: _loss_bits(
                        loss, config, seed
                    ),
                )
            )
    return items


@pytest.mark.parametrize("threads", [2, 6])
def test_concurrent_python_threads_match_sequential(threads: int) -> None:
    items = _work_items()
    assert items, "the registry has no op in this build"
    items = items * 2  # the same op in two threads at once too
    sequential = [fn() for _, fn in items]

    results: list[list[bytes] | None] = [None] * len(items)
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker(w: int) -> None:
        try:
            barrier.wait()
            for i in range(w, len(items), threads):
                results[i] = items[i][1]()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in pool), "a thread hung"
    assert not errors, errors
    for (name, _), want, got in zip(items, sequential, results, strict=True):
        assert got == want, f"{name}: concurrent result differs from the sequential one"


def test_set_num_threads_while_other_threads_run_kernels() -> None:
    # The thread count may change between a kernel sizing its parallel region and running it:
    # every task must still run exactly once (no lost task, no hang, same bits).
    spec = OPTIMIZERS[0]
    want = _optimizer_run(spec, spec.configs[1], seed=9)
    stop = threading.Event()
    got: list[list[bytes]] = []
    errors: list[BaseException] = []

    def stepper() -> None:
        try:
            while not stop.is_set():
                got.append(_optimizer_run(spec, spec.configs[1], seed=9))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    old = gradfuse.get_num_threads()
    t = threading.Thread(target=stepper)
    t.start()
    try:
        for k in range(2000):
            gradfuse.set_num_threads(1 + k % 4)
            if len(got) >= 20:
                break
    finally:
        stop.set()
        t.join(timeout=60)
        gradfuse.set_num_threads(old)
    assert not t.is_alive(), "a kernel hung while the thread count changed"
    assert not errors, errors
    assert got
    assert all(r == want for r in got)


FORK_SCRIPT = """
import os, sys
import numpy as np
import gradfuse
from gradfuse.functional import sgd_

gradfuse.set_num_threads(2)  # a thread count chosen before any kernel ran
p, g = [np.ones(1 << 18, np.float32)], [np.ones(1 << 18, np.float32)]
sgd_(p, g, lr=0.5)  # the parent's OpenMP threads now exist
pid = os.fork()
if pid == 0:
    sgd_(p, g, lr=0.5)  # the child has none of them: it must not wait for them
    os._exit(0 if float(p[0][0]) == 0.0 and float(p[0][-1]) == 0.0 else 3)
import time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)  # hung: never leave it behind
os.waitpid(pid, 0)
sys.exit(4)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_parallel_kernels() -> None:
    # A DataLoader worker forked after gradfuse ran threaded kernels must not wait for OpenMP
    # threads that only exist in the parent (GNU OpenMP's regions would; gradfuse runs serially
    # there, src/cpu/parallel.h; tests/test_threads.py checks the same with torch loaded).
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(gradfuse.__file__))}
    r = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT],
        check=False,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
