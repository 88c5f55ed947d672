"""gradfuse.functional.{adam_, adamw_, adamax_, nadam_, radam_}: numpy and torch inputs, step
counters, AMP scaling and clipping inside the update, bad input refused with nothing written."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from gradfuse import functional as F
from gradfuse.functional import _steps
from optim_testing import assert_unchanged, snapshot

# name -> (function, names of its state lists, extra keyword arguments)
FUNCS: dict[str, tuple[Callable[..., None], tuple[str, ...], dict[str, Any]]] = {
    "adam_": (F.adam_, ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"), {"amsgrad": True}),
    "adamw_": (F.adamw_, ("exp_avgs", "exp_avg_sqs"), {}),
    "adamax_": (F.adamax_, ("exp_avgs", "exp_infs"), {"weight_decay": 0.1}),
    "nadam_": (F.nadam_, ("exp_avgs", "exp_avg_sqs"), {"weight_decay": 0.1}),
    "radam_": (F.radam_, ("exp_avgs", "exp_avg_sqs"), {"weight_decay": 0.1}),
}
SHAPES = [(7,), (3, 5), (4097,), (0,)]


def _zeros_like(x: Any) -> Any:
    return torch.zeros_like(x) if isinstance(x, torch.Tensor) else np.zeros_like(x)


class Run:
    """One functional optimizer with its state, on numpy arrays or torch tensors."""

    def __init__(self, name: str, params: list[Any], steps: Any = None) -> None:
        self.fn, self.state_names, self.kw = FUNCS[name]
        self.name = name
        self.params = params
        self.states = [[_zeros_like(p) for p in params] for _ in self.state_names]
        self.steps: Any = steps if steps is not None else [0] * len(params)
        # NAdam's mu_product: torch keeps a float32 0-dim tensor; numpy a float32 0-dim array.
        self.mu_products: list[Any] = [
            torch.tensor(1.0) if isinstance(p, torch.Tensor) else np.array(1.0, np.float32)
            for p in params
        ]

    def step(self, grads: list[Any], **kw: Any) -> None:
        args: list[Any] = [self.params, grads, *self.states]
        if self.name == "nadam_":
            args.append(self.mu_products)
        self.fn(*args, state_steps=self.steps, lr=0.01, **self.kw, **kw)

    def tensors(self) -> list[Any]:
        return [*self.params, *(t for s in self.states for t in s)]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("name", list(FUNCS))
def test_numpy_matches_torch(name: str, dtype: str) -> None:
    # Plain-number counters for numpy, float32 0-dim tensors (torch's layout) for torch.
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = Run(name, params)
    theirs = Run(
        name,
        [torch.from_numpy(p.copy()) for p in params],
        [torch.tensor(0.0) for _ in params],
    )
    for _ in range(5):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        ours.step(grads)
        theirs.step([torch.from_numpy(g) for g in grads])
    for a, b in zip(ours.tensors(), theirs.tensors(), strict=True):
        assert np.array_equal(a, b.numpy())
    assert ours.steps == [5] * len(params)
    assert [s.item() for s in theirs.steps] == [5.0] * len(params)


@pytest.mark.parametrize("name", list(FUNCS))
def test_found_inf_changes_nothing_and_grad_scale_unscales(name: str) -> None:
    params = [torch.randn(s) for s in SHAPES]
    plain = Run(name, [p.clone() for p in params], [torch.tensor(0.0) for _ in params])
    scaled = Run(name, [p.clone() for p in params], [torch.tensor(0.0) for _ in params])
    scale = torch.tensor(1024.0)  # a power of two: scaling and unscaling are exact
    for k in range(4):
        grads = [torch.randn(s) for s in SHAPES]
        if k == 2:
            before = snapshot(scaled.tensors())
            counters = [c.item() for c in scaled.steps + scaled.mu_products]
            scaled.step([g * scale for g in grads], grad_scale=scale, found_inf=torch.tensor(1.0))
            assert_unchanged(before, scaled.tensors())
            assert [c.item() for c in scaled.steps + scaled.mu_products] == counters
            continue
        plain.step(grads)
        scaled.step([g * scale for g in grads], grad_scale=scale, found_inf=torch.tensor(0.0))
    for a, b in zip(plain.tensors(), scaled.tensors(), strict=True):
        assert torch.equal(a, b)
    assert [c.item() for c in plain.steps] == [c.item() for c in scaled.steps] == [3.0] * 4


@pytest.mark.parametrize("name", list(FUNCS))
def test_clip_coef_scales_the_gradient_in_the_update(name: str) -> None:
    params = [torch.randn(s) for s in SHAPES]
    pre = Run(name, [p.clone() for p in params])
    fused = Run(name, [p.clone() for p in params])
    coef = torch.tensor(0.3)
    for _ in range(3):
        grads = [torch.randn(s) for s in SHAPES]
        pre.step([g * coef for g in grads])
        fused.step([g.clone() for g in grads], clip_coef=coef)
    for a, b in zip(pre.tensors(), fused.tensors(), strict=True):
        assert torch.equal(a, b)


def test_mixed_dtypes_and_steps_in_one_call() -> None:
    # One call, two dtypes and three different step counts: one native call per group, each
    # with its own bias corrections; compared with separate single-tensor calls.
    params = [torch.randn(5), torch.randn(6, dtype=torch.float64), torch.randn(7)]
    grads = [torch.randn_like(p) for p in params]
    steps = [torch.tensor(0.0), torch.tensor(4.0), torch.tensor(9.0)]
    m = [torch.rand_like(p) for p in params]
    v = [torch.rand_like(p) for p in params]
    singles = [[t.clone() for t in ts] for ts in (params, m, v, steps)]
    F.radam_(params, grads, m, v, state_steps=steps, lr=0.01)
    for i in range(3):
        p1, m1, v1, s1 = ([ts[i]] for ts in singles)
        F.radam_(p1, [grads[i]], m1, v1, state_steps=s1, lr=0.01)
        assert torch.equal(p1[0], params[i])
        assert torch.equal(m1[0], m[i])
        assert torch.equal(v1[0], v[i])
    assert [s.item() for s in steps] == [1.0, 5.0, 10.0]


def test_step_counters_of_mixed_shapes_and_dtypes_each_advance_once() -> None:
    # One _foreach_add_ for all counters; the read-back falls back to one read per counter when
    # they cannot be stacked (a 0-dim and a 1-element counter) or should not be: stacking an
    # int64 count past 2**24 with a float32 one would round it.
    params = [torch.randn(5) for _ in range(3)]
    grads = [torch.randn_like(p) for p in params]
    for steps in (
        [torch.tensor(0.0), torch.tensor([4.0]), torch.tensor(9.0)],
        [torch.tensor(0.0), torch.tensor(4.0, dtype=torch.float64), torch.tensor(9.0)],
        [torch.tensor(0.0), torch.tensor(4), torch.tensor(9.0)],
    ):
        m = [torch.rand_like(p) for p in params]
        v = [torch.rand_like(p) for p in params]
        singles = [[t.clone() for t in ts] for ts in (params, m, v, steps)]
        F.adam_(params, grads, m, v, state_steps=steps, lr=0.01)
        for i in range(3):
            p1, m1, v1, s1 = ([ts[i]] for ts in singles)
            F.adam_(p1, [grads[i]], m1, v1, state_steps=s1, lr=0.01)
            assert torch.equal(p1[0], params[i])
            assert torch.equal(s1[0], steps[i])
        assert [s.item() for s in steps] == [1.0, 5.0, 10.0]
        assert [s.dtype for s in steps] == [s.dtype for s in singles[3]]


def test_int64_step_counts_past_float32_precision_are_read_exactly() -> None:
    big = float(1 << 24)
    steps = [torch.tensor(1 << 24), torch.tensor(0.0)]  # int64 and float32
    assert _steps.increment_all(steps) == [big + 1, 1.0]


def _bad(kind: str) -> tuple[dict[str, Any], str, type[Exception]]:
    """adam_ arguments with exactly one thing wrong, the text the error must contain, its type."""
    p = [torch.randn(6), torch.randn(2, 3)]
    args: dict[str, Any] = {
        "params": p,
        "grads": [torch.randn(6), torch.randn(2, 3)],
        "exp_avgs": [torch.randn(6), torch.randn(2, 3)],
        "exp_avg_sqs": [torch.rand(6), torch.rand(2, 3)],
        "max_exp_avg_sqs": [torch.rand(6), torch.rand(2, 3)],
        "state_steps": [torch.tensor(3.0), torch.tensor(3.0)],
    }
    if kind == "shape":
        args["exp_avgs"][1] = torch.randn(3, 2)
        return args, "exp_avgs[1] has shape (3, 2)", ValueError
    if kind == "dtype":
        args["exp_avg_sqs"][0] = torch.rand(6, dtype=torch.float64)
        return args, "exp_avg_sqs[0] has dtype float64", TypeError
    if kind == "length":
        args["grads"] = args["grads"][:1]
        return args, "got 1 grads for 2 params", ValueError
    if kind == "steps_length":
        args["state_steps"] = args["state_steps"][:1]
        return args, "got 1 state_steps for 2 params", ValueError
    if kind == "steps_type":
        args["state_steps"][1] = "3"
        return args, "state_steps[1] must be a number", TypeError
    if kind == "alias":
        args["exp_avgs"][0] = p[0]
        return args, "share memory", ValueError
    if kind == "amsgrad":
        args["max_exp_avg_sqs"] = None
        return args, "max_exp_avg_sqs", ValueError
    if kind == "grad_scale":
        args["grad_scale"] = torch.tensor(2.0, dtype=torch.float64)
        return args, "grad_scale must be a 1-element float32", TypeError
    if kind == "readonly":
        args = {k: [t.numpy() for t in v] if k != "state_steps" else v for k, v in args.items()}
        args["exp_avgs"][1].flags.writeable = False
        return args, "exp_avgs[1]: the array is read-only", ValueError
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "shape",
        "dtype",
        "length",
        "steps_length",
        "steps_type",
        "alias",
        "amsgrad",
        "grad_scale",
        "readonly",
    ],
)
def test_bad_input_is_refused_and_nothing_changes(kind: str) -> None:
    args, text, error = _bad(kind)
    lists = [v for k, v in args.items() if isinstance(v, list) and k != "state_steps"]
    tensors = [t for lst in lists for t in lst]
    steps = args["state_steps"]
    before = snapshot(tensors)
    steps_before = [float(s) for s in steps if not isinstance(s, str)]
    params, grads = args.pop("params"), args.pop("grads")
    exp_avgs, exp_avg_sqs = args.pop("exp_avgs"), args.pop("exp_avg_sqs")
    with pytest.raises(error, match=re.escape(text)):
        F.adam_(params, grads, exp_avgs, exp_avg_sqs, amsgrad=True, **args)
    assert_unchanged(before, tensors)
    assert [float(s) for s in steps if not isinstance(s, str)] == steps_before


def test_nadam_mu_products_validated_first() -> None:
    p = [torch.randn(3)]
    m, v, steps = [torch.zeros(3)], [torch.zeros(3)], [torch.tensor(0.0)]
    before = snapshot(p)
    with pytest.raises(ValueError, match="got 0 mu_products for 1 params"):
        F.nadam_(p, [torch.randn(3)], m, v, [], state_steps=steps)
    assert_unchanged(before, p)
    assert steps[0].item() == 0.0
