"""FusedOptimizer's per-step gathering: the native path (``_core.gather_state``) must find
exactly what the Python path finds, and step aside (None, nothing created) for everything it
does not handle."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import gradfuse.optim as go
from gradfuse._native import core


def _params(n: int = 5, dtype: torch.dtype = torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(1)
    shapes = [(7,), (1,), (4097,), (0,), (3, 5)]
    ps = [torch.nn.Parameter(torch.randn(shapes[i % 5], generator=gen).to(dtype)) for i in range(n)]
    for i, p in enumerate(ps):
        if i != 1:  # one param without a gradient: skipped, as torch skips it
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
    return ps


def _same(a: Any, b: Any) -> bool:
    """Same structure, same objects (identity, not values)."""
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a is b


OPTIMIZERS = {
    "sgd-momentum": lambda ps: go.SGD(ps, lr=0.1, momentum=0.9),
    "sgd": lambda ps: go.SGD(ps, lr=0.1),
    "adamw-amsgrad": lambda ps: go.AdamW(ps, amsgrad=True),
    "adam": go.Adam,
    "nadam": go.NAdam,  # two counters
    "rmsprop": lambda ps: go.RMSprop(ps, momentum=0.5, centered=True),
    "lion": go.Lion,
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_native_gather_finds_what_the_python_path_finds(name: str) -> None:
    opt = OPTIMIZERS[name](_params())
    opt.step()  # creates the state (the Python path's business)
    group = opt.param_groups[0]
    native = opt._gather_plain(group)
    assert native is not None
    assert _same(tuple(native), tuple(opt._gather_any(group)))
    assert len(native.params) == 4


def test_native_gather_steps_aside_and_creates_nothing() -> None:
    # No state yet: the first step creates it on the Python path.
    ps = _params()
    opt = go.AdamW(ps)
    assert opt._gather_plain(opt.param_groups[0]) is None
    assert len(opt.state) == 0
    opt.step()
    group = opt.param_groups[0]
    # A new param with a gradient and no state yet.
    extra = torch.nn.Parameter(torch.randn(3))
    extra.grad = torch.randn(3)
    opt.add_param_group({"params": [extra]})
    assert opt._gather_plain(opt.param_groups[1]) is None
    assert extra not in opt.state
    # A sparse gradient (the subclass's _sparse_step, or torch's error, on the Python path).
    dense = ps[0].grad
    ps[0].grad = dense.to_sparse()
    assert opt._gather_plain(group) is None
    ps[0].grad = dense
    # A missing counter: the Python path raises torch's KeyError.
    saved = opt.state[ps[0]].pop("step")
    assert opt._gather_plain(group) is None
    opt.state[ps[0]]["step"] = saved
    assert opt._gather_plain(group) is not None


def test_native_gather_leaves_complex_params_to_the_python_path() -> None:
    ps = [torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))]
    ps[0].grad = torch.randn(4, dtype=torch.complex64)
    opt = go.Adam(ps)
    opt.step()
    assert opt._gather_plain(opt.param_groups[0]) is None
    assert opt.state[ps[0]]["exp_avg"].dtype == torch.complex64  # stepped through real views


def test_gather_state_refuses_what_it_does_not_know() -> None:
    opt = go.SGD(_params(), lr=0.1, momentum=0.9)
    opt.step()
    params = opt.param_groups[0]["params"]
    keys = ("momentum_buffer",)
    assert core().gather_state(params, opt.state, keys, ()) is not None
    assert core().gather_state(tuple(params), opt.state, keys, ()) is None  # not a list
    assert core().gather_state(params, list(opt.state.items()), keys, ()) is None  # not a dict
    assert core().gather_state([*params, "x"], opt.state, keys, ()) is None  # not a tensor
