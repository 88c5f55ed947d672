"""capturable=True on the CPU: the functional Adam/AdamW path that CUDA graphs use (counters
advanced and bias corrections computed with tensor ops, per-tensor scalar table, no host reads)
gives the same results as capturable=False, advances the counters in place, and skips a step
that AMP flags without any host read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pytest
import torch

import tolerances
from gradfuse import functional as F
from optim_testing import assert_unchanged, snapshot

SHAPES = [(7,), (3, 5), (4097,), (1,), (0,)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
STEPS = 50


class AdamRun:
    """adam_/adamw_ over its own copies of params and state, capturable or not."""

    def __init__(self, params: list[torch.Tensor], fn: Callable[..., None], **kw: Any) -> None:
        self.fn, self.kw = fn, kw
        self.params = [p.clone() for p in params]
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.max_exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.tensor(0.0) for _ in params]

    def step(self, grads: list[torch.Tensor], **kw: Any) -> None:
        self.fn(
            self.params,
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            self.max_exp_avg_sqs,
            state_steps=self.steps,
            **self.kw,
            **kw,
        )

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params, *self.exp_avgs, *self.exp_avg_sqs, *self.max_exp_avg_sqs]


def _assert_same_trajectory(ours: AdamRun, theirs: AdamRun, dtype: torch.dtype) -> None:
    tol = tolerances.CAPTURABLE_VS_HOST[dtype]
    for i, (a, b) in enumerate(zip(ours.tensors(), theirs.tensors(), strict=True)):
        tolerances.assert_close(a, b, tol, msg=f"tensor {i} ({a.dtype}, {tuple(a.shape)})")
    assert [float(s) for s in ours.steps] == [float(s) for s in theirs.steps]


OPTIONS = [
    {},
    {"amsgrad": True},
    {"maximize": True, "weight_decay": 0.1},
    {"amsgrad": True, "maximize": True, "weight_decay": 0.05},
]


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["lr_float", "lr_tensor"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("fn", [F.adam_, F.adamw_], ids=["adam_", "adamw_"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_capturable_matches_host_path(
    dtype: torch.dtype, fn: Callable[..., None], options: dict[str, Any], tensor_lr: bool
) -> None:
    params = [torch.randn(s).to(dtype) for s in SHAPES]
    lr: Any = torch.tensor(3e-3) if tensor_lr else 3e-3
    kw = {"lr": lr, "beta1": 0.8, "beta2": 0.95, "eps": 1e-6, **options}
    host = AdamRun(params, fn, **kw)
    dev = AdamRun(params, fn, capturable=True, **kw)
    for _ in range(STEPS):
        grads = [torch.randn(s).to(dtype) for s in SHAPES]
        host.step(grads)
        dev.step(grads)
    assert [float(s) for s in dev.steps] == [float(STEPS)] * len(SHAPES)
    _assert_same_trajectory(dev, host, dtype)
    # The run moved: a capturable path that wrote nothing would fail above only by luck.
    assert not torch.equal(dev.params[2], params[2])


def test_capturable_counters_of_different_values() -> None:
    # Each tensor's own counter gives its own bias corrections (one table row per tensor).
    params = [torch.randn(s) for s in SHAPES[:3]]
    host = AdamRun(params, F.adamw_, lr=1e-2)
    dev = AdamRun(params, F.adamw_, lr=1e-2, capturable=True)
    for steps in (host.steps, dev.steps):
        for i, s in enumerate(steps):
            s.fill_(3 * i)
    for _ in range(5):
        grads = [torch.randn(s) for s in SHAPES[:3]]
        # The host path groups tensors by step value: one call per distinct counter.
        host.step(grads)
        dev.step(grads)
    assert [float(s) for s in dev.steps] == [5.0, 8.0, 11.0]
    _assert_same_trajectory(dev, host, torch.float32)


class HostReads:
    """Counts (and refuses) every way Python code reads a tensor's value on the host."""

    NAMES = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")

    def __init__(self) -> None:
        self.calls: list[str] = []

    @contextmanager
    def forbidden(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        with monkeypatch.context() as m:
            for name in self.NAMES:
                m.setattr(torch.Tensor, name, self._refuse(name))
            yield

    def _refuse(self, name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise AssertionError(f"host read of a tensor: Tensor.{name}")

        return refuse


@pytest.mark.parametrize("amsgrad", [False, True])
def test_capturable_step_reads_nothing_on_the_host(
    monkeypatch: pytest.MonkeyPatch, amsgrad: bool
) -> None:
    params = [torch.randn(s) for s in SHAPES]
    host = AdamRun(params, F.adamw_, lr=torch.tensor(1e-2), amsgrad=amsgrad)
    dev = AdamRun(params, F.adamw_, lr=torch.tensor(1e-2), amsgrad=amsgrad, capturable=True)
    scale = torch.full((1,), 1024.0)
    found_inf = torch.zeros(1)
    clip_coef = torch.full((1,), 0.5)
    reads = HostReads()
    for _ in range(3):
        grads = [torch.randn(s) * 1024.0 for s in SHAPES]
        scaling = {"grad_scale": scale, "found_inf": found_inf, "clip_coef": clip_coef}
        with reads.forbidden(monkeypatch):
            dev.step(grads, **scaling)
        host.step(grads, **scaling)
    assert reads.calls == []
    _assert_same_trajectory(dev, host, torch.float32)
    # The probe works: the host path does read (its counters and found_inf).
    with reads.forbidden(monkeypatch), pytest.raises(AssertionError, match="host read"):
        host.step([torch.randn(s) for s in SHAPES], found_inf=found_inf)
    assert reads.calls


def test_capturable_counters_advance_in_place_and_found_inf_skips() -> None:
    params = [torch.randn(s) for s in SHAPES]
    dev = AdamRun(params, F.adam_, lr=1e-2, amsgrad=True, capturable=True)
    host = AdamRun(params, F.adam_, lr=1e-2, amsgrad=True)
    counters = list(dev.steps)
    skip = {2, 5, 6}
    for k in range(10):
        grads = [torch.randn(s) for s in SHAPES]
        found_inf = torch.full((), 1.0 if k in skip else 0.0)
        before = snapshot(dev.tensors())
        steps_before = [s.clone() for s in dev.steps]
        dev.step(grads, found_inf=found_inf)
        host.step(grads, found_inf=found_inf.reshape(1))
        if k in skip:
            assert_unchanged(before, dev.tensors())
            assert all(torch.equal(a, b) for a, b in zip(dev.steps, steps_before, strict=True))
    # The same tensor objects were advanced (torch keeps them in the optimizer's state).
    assert all(a is b for a, b in zip(dev.steps, counters, strict=True))
    assert [float(s) for s in dev.steps] == [10.0 - len(skip)] * len(SHAPES)
    _assert_same_trajectory(dev, host, torch.float32)


def test_capturable_float64_counters() -> None:
    # torch keeps float64 counters under a float64 default dtype; the table is unaffected.
    params = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    host = AdamRun(params, F.adam_, lr=1e-2)
    dev = AdamRun(params, F.adam_, lr=1e-2, capturable=True)
    dev.steps = [torch.tensor(0.0, dtype=torch.float64) for _ in params]
    for _ in range(5):
        grads = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
        host.step(grads)
        dev.step(grads)
    assert all(s.dtype == torch.float64 for s in dev.steps)
    _assert_same_trajectory(dev, host, torch.float64)


BAD: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("plain-number steps", {"steps": [0, 0]}, TypeError, r"state_steps\[0\] must be a 1-element"),
    ("tensor beta1", {"beta1": torch.tensor(0.9)}, TypeError, "beta1 must be a Python number"),
    (
        "step on another device",
        {"steps": [torch.tensor(0.0), torch.tensor(0.0, device="meta")]},
        ValueError,
        r"state_steps\[1\] must be on the device of params\[1\]",
    ),
    ("2-element lr", {"lr": torch.ones(2)}, ValueError, "lr: expected a number or a 1-element"),
    ("numpy found_inf", {"found_inf": "numpy"}, TypeError, "found_inf must be a torch tensor"),
]


@pytest.mark.parametrize(("what", "change", "error", "match"), BAD, ids=[b[0] for b in BAD])
def test_capturable_refuses_bad_input_and_writes_nothing(
    what: str, change: dict[str, Any], error: type[Exception], match: str
) -> None:
    import numpy as np

    params = [torch.randn(3), torch.randn(4)]
    run = AdamRun(params, F.adam_, capturable=True)
    steps = change.pop("steps", run.steps)
    if change.get("found_inf") == "numpy":
        change["found_inf"] = np.zeros(1, np.float32)
    before = snapshot(run.tensors())
    steps_before = [s.clone() for s in run.steps]
    with pytest.raises(error, match=match):
        F.adam_(
            run.params,
            [torch.randn(3), torch.randn(4)],
            run.exp_avgs,
            run.exp_avg_sqs,
            state_steps=steps,
            **{"lr": 1e-3, **change},
            capturable=True,
        )
    assert_unchanged(before, run.tensors())
    assert all(torch.equal(a, b) for a, b in zip(run.steps, steps_before, strict=True))
    assert what


class StateRun:
    """adamax_ / nadam_ / radam_ / rmsprop_ over their own copies of params and zero state."""

    SPECS: ClassVar[dict[str, tuple[Callable[..., None], int, dict[str, Any]]]] = {
        # name -> (function, number of state lists, extra keyword arguments)
        "adamax_": (F.adamax_, 2, {"weight_decay": 0.1}),
        "nadam_": (F.nadam_, 2, {"weight_decay": 0.1}),
        "nadam_decoupled": (F.nadam_, 2, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        "radam_": (F.radam_, 2, {"weight_decay": 0.1}),
        "radam_decoupled": (F.radam_, 2, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        "rmsprop_": (F.rmsprop_, 3, {"centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    }

    def __init__(self, name: str, params: list[torch.Tensor], **kw: Any) -> None:
        self.name = name
        self.fn, n_state, extra = self.SPECS[name]
        self.kw = {**extra, **kw}
        self.params = [p.clone() for p in params]
        self.states = [[torch.zeros_like(p) for p in params] for _ in range(n_state)]
        self.steps = [torch.tensor(0.0) for _ in params]
        self.mu_products = [torch.tensor(1.0) for _ in params]

    def step(self, grads: list[torch.Tensor], **kw: Any) -> None:
        if self.name == "rmsprop_":
            self.fn(self.params, grads, *self.states, self.steps, **self.kw, **kw)
            return
        args: list[Any] = [self.params, grads, *self.states]
        if self.name.startswith("nadam"):
            args.append(self.mu_products)
        self.fn(*args, state_steps=self.steps, **self.kw, **kw)

    def tensors(self) -> list[torch.Tensor]:
        return [*self.params, *(t for s in self.states for t in s), *self.mu_products]


@pytest.mark.parametrize("tensor_lr", [False, True], ids=["lr_float", "lr_tensor"])
@pytest.mark.parametrize("name", list(StateRun.SPECS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_capturable_matches_host_path_other_optimizers(
    dtype: torch.dtype, name: str, tensor_lr: bool
) -> None:
    params = [torch.randn(s).to(dtype) for s in SHAPES]
    lr: Any = torch.tensor(2e-3) if tensor_lr else 2e-3
    host = StateRun(name, params, lr=lr)
    dev = StateRun(name, params, lr=lr, capturable=True)
    for k in range(STEPS):
        grads = [torch.randn(s).to(dtype) for s in SHAPES]
        found_inf = torch.full((1,), 1.0 if k == 7 else 0.0)  # one skipped step
        host.step(grads, found_inf=found_inf)
        dev.step(grads, found_inf=found_inf)
    tol = tolerances.CAPTURABLE_VS_HOST[dtype]
    for i, (a, b) in enumerate(zip(dev.tensors(), host.tensors(), strict=True)):
        tolerances.assert_close(a, b, tol, msg=f"{name}: tensor {i}")
    assert [float(s) for s in dev.steps] == [float(STEPS - 1)] * len(SHAPES)
    assert not torch.equal(dev.params[2], params[2])


@pytest.mark.parametrize("name", list(StateRun.SPECS))
def test_capturable_other_optimizers_read_nothing_on_the_host(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    params = [torch.randn(s) for s in SHAPES]
    dev = StateRun(name, params, lr=torch.tensor(1e-2), capturable=True)
    host = StateRun(name, params, lr=torch.tensor(1e-2))
    reads = HostReads()
    for k in range(4):
        grads = [torch.randn(s) for s in SHAPES]
        found_inf = torch.full((1,), 1.0 if k == 2 else 0.0)
        with reads.forbidden(monkeypatch):
            dev.step(grads, found_inf=found_inf, grad_scale=torch.full((1,), 2.0))
        host.step(grads, found_inf=found_inf, grad_scale=torch.full((1,), 2.0))
    assert reads.calls == []
    for i, (a, b) in enumerate(zip(dev.tensors(), host.tensors(), strict=True)):
        tolerances.assert_close(a, b, tolerances.CAPTURABLE_VS_HOST[torch.float32], f"{i}")
    assert [float(s) for s in dev.steps] == [3.0] * len(SHAPES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_sgd_tensor_lr_is_read_by_the_kernel(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    # torch's SGD has no capturable flag; gradfuse's sgd_ reads a tensor lr on the params'
    # device (no sync for a CUDA lr), with the same results as the host number.
    params = [torch.randn(s).to(dtype) for s in SHAPES]
    ours = [p.clone() for p in params]
    theirs = [p.clone() for p in params]
    our_bufs: list[Any] = [None] * len(SHAPES)
    their_bufs: list[Any] = [None] * len(SHAPES)
    lr = torch.tensor(0.05)
    reads = HostReads()
    kw = {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}
    for k in range(5):
        grads = [torch.randn(s).to(dtype) for s in SHAPES]
        lr.fill_(0.05 / (k + 1))  # a scheduler changing the tensor in place
        lr_value = lr.item()  # the float32 value, as a host number
        with reads.forbidden(monkeypatch):
            F.sgd_(ours, grads, our_bufs, lr=lr, **kw)
        F.sgd_(theirs, grads, their_bufs, lr=lr_value, **kw)
    assert reads.calls == []
    for a, b in zip([*ours, *our_bufs], [*theirs, *their_bufs], strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(ours[2], params[2])
