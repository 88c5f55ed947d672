"""torch.compile with gradfuse: the fused updates trace as the custom op gradfuse::fused_update_
(gradfuse/_compile.py), with no graph break (fullgraph=True), on the CPU with inductor, and
give the same results as eager."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import integration_cases
import pytest
import torch
from torch import nn

import gradfuse
import gradfuse._compile
import optim_testing
import tolerances

STEPS = 4


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(9, 17), nn.Tanh(), nn.Linear(17, 3)).double()


def _grads(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(5, 9, generator=g, dtype=torch.float64)
    model.zero_grad()
    model(x).square().mean().backward()


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("name", "kwargs"), integration_cases.params(fast=integration_cases.COMPILE)
)
def test_compiled_step_equals_eager(name: str, kwargs: dict[str, Any]) -> None:
    eager_model = _model()
    compiled_model = copy.deepcopy(eager_model)
    torch_model = copy.deepcopy(eager_model)
    eager = integration_cases.make("gradfuse", name, eager_model.parameters(), kwargs)
    compiled = integration_cases.make("gradfuse", name, compiled_model.parameters(), kwargs)
    reference = integration_cases.make("torch", name, torch_model.parameters(), kwargs)
    step = torch.compile(compiled.step, fullgraph=True)  # fullgraph: a graph break fails
    for s in range(STEPS):
        for m in (eager_model, compiled_model, torch_model):
            _grads(m, s)
        eager.step()
        step()
        reference.step()
    for i, (a, b, c) in enumerate(
        zip(
            compiled_model.parameters(),
            eager_model.parameters(),
            torch_model.parameters(),
            strict=True,
        )
    ):
        # The op runs the eager function on the same values: the same bits.
        assert torch.equal(a, b), f"param {i}: compiled differs from eager"
        tolerances.assert_close(a, c, tolerances.TRAJECTORY[torch.float64], f"param {i} vs torch")
    # The state created inside the compiled step is in the optimizer, as in eager.
    assert compiled.state_dict()["state"].keys() == eager.state_dict()["state"].keys()
    for k, st in compiled.state_dict()["state"].items():
        for key, v in st.items():
            ref = eager.state_dict()["state"][k][key]
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ref)), (k, key)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_compiled_functional_call(momentum: float) -> None:
    params = optim_testing.make_params([(7,), (4097,), (1,), (0,)], torch.float32)
    grads = optim_testing.random_grads(params, steps=3)

    def run(fn: Any) -> list[torch.Tensor]:
        ps = [p.clone() for p in params]
        bufs: list[torch.Tensor | None] = [None] * len(ps)
        for gs in grads:
            fn(ps, gs, bufs)
        return ps

    def update(ps: list[torch.Tensor], gs: list[torch.Tensor], bufs: list[Any]) -> None:
        gradfuse.functional.sgd_(ps, gs, bufs, lr=0.1, momentum=momentum, weight_decay=0.01)

    want = run(update)
    got = run(torch.compile(update, fullgraph=True))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), f"param {i}"


def test_custom_op_passes_opcheck() -> None:
    # torch's own checks of a custom op: schema (declared mutations), fake tensor
    # implementation, autograd registration, AOT dispatch.
    p = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    g = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    floats = [0.1]  # lr
    # (code, length) per parameter of sgd_: params written, grads read, momentum_buffers
    # None, lr a float, the other keyword arguments left at their defaults.
    c = gradfuse._compile
    rest = len(inspect.signature(gradfuse.functional.sgd_).parameters) - 4
    layout = [c._WRITTEN, 2, c._READ, 2, c._NONE, 0, c._FLOAT, 1] + [c._ABSENT, 0] * rest
    before = [t.clone() for t in p]
    torch.library.opcheck(
        torch.ops.gradfuse.fused_update_.default, ("sgd_", p, g, floats, [], layout, [])
    )
    # opcheck ran the op on copies; running it here performs one plain SGD step.
    torch.ops.gradfuse.fused_update_("sgd_", p, g, floats, [], layout, [])
    for a, b0, gg in zip(p, before, g, strict=True):
        tolerances.assert_close(a, b0 - 0.1 * gg, tolerances.STEP[torch.float64])


def test_unregistered_name_is_an_error() -> None:
    assert gradfuse._compile.OP_NAME == "gradfuse::fused_update_"
    with pytest.raises(KeyError, match="no_such_op_"):
        torch.ops.gradfuse.fused_update_("no_such_op_", [], [], [], [], [], [])


def test_tensor_lr_with_scheduler_does_not_recompile() -> None:
    # The pattern torch documents for compiled optimizers with a scheduler: lr as a tensor
    # (a graph input, not a constant), the step compiled inside a function.
    from torch._dynamo.utils import counters

    first = _model()
    models = [first, copy.deepcopy(first)]
    opts = [gradfuse.optim.SGD(m.parameters(), lr=torch.tensor(0.05), momentum=0.9) for m in models]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.7) for o in opts]

    @torch.compile
    def compiled_step() -> None:
        opts[0].step()

    counters.clear()
    for s in range(5):
        for m in models:
            _grads(m, s)
        compiled_step()
        opts[1].step()
        for sch in scheds:
            sch.step()
    assert counters["stats"]["unique_graphs"] <= 2  # first step (state creation) + the rest
    for i, (a, b) in enumerate(zip(models[0].parameters(), models[1].parameters(), strict=True)):
        assert torch.equal(a, b), f"param {i}: compiled with scheduler differs from eager"


@gradfuse._compile.traceable(
    written=("params", "bufs"), creates={"bufs": lambda kw: kw.get("use_bufs", True)}
)
def _toy_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor | None],
    *,
    betas: tuple[float, float],
    steps: list[int],
    scale: torch.Tensor | None = None,
    use_bufs: bool = True,
    count: int = 1,
) -> None:
    """Every kind of argument the generic op carries: written lists with state created on the
    first call, a read list, a tuple and a list of numbers, an optional tensor, a bool, an int.
    Plain torch code: it only ever runs eagerly, inside the op."""
    assert isinstance(betas, tuple)
    assert isinstance(steps, list)
    assert isinstance(use_bufs, bool)
    assert isinstance(count, int)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        d = g * (1.0 if scale is None else scale)
        if use_bufs:
            if bufs[i] is None:
                bufs[i] = d.clone()
            else:
                bufs[i].mul_(betas[0]).add_(d)  # type: ignore[union-attr]
            d = bufs[i]  # type: ignore[assignment]
        p.sub_(betas[1] * steps[i] * count * d)


@pytest.mark.parametrize("use_bufs", [True, False])
@pytest.mark.parametrize("scale", [None, 0.5])
def test_generic_op_carries_every_argument_kind(use_bufs: bool, scale: float | None) -> None:
    params = optim_testing.make_params([(5,), (3, 2)], torch.float64)
    grads = optim_testing.random_grads(params, steps=3)

    def run(fn: Any) -> tuple[list[torch.Tensor], list[Any]]:
        ps = [p.clone() for p in params]
        bufs: list[Any] = [None] * len(ps)
        for gs in grads:
            fn(ps, gs, bufs)
        return ps, bufs

    def update(ps: list[torch.Tensor], gs: list[torch.Tensor], bufs: list[Any]) -> None:
        _toy_(
            ps,
            gs,
            bufs,
            betas=(0.9, 0.1),
            steps=[1, 2],
            scale=None if scale is None else torch.tensor(scale, dtype=torch.float64),
            use_bufs=use_bufs,
            count=2,
        )

    want, want_bufs = run(update)
    got, got_bufs = run(torch.compile(update, fullgraph=True))
    for a, b in zip(got + got_bufs, want + want_bufs, strict=True):
        if b is None:
            assert a is None  # a slot the function does not use stays untouched
        else:
            assert torch.equal(a, b)
