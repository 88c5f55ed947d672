"""Every torch.optim.lr_scheduler drives a gradfuse optimizer exactly as it drives torch's, and
optimizer checkpoints (torch.save / torch.load(weights_only=True)) move both ways."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import integration_cases
import pytest
import torch
from torch.optim import lr_scheduler as S

import optim_testing
import tolerances

STEPS = 12
SHAPES = [(7, 3), (4097,), (1,)]
TOL = tolerances.TRAJECTORY[torch.float64]


def _cycles_momentum(opt: torch.optim.Optimizer) -> bool:
    """CyclicLR / OneCycleLR cycle momentum (or beta1) when the optimizer has one."""
    return "momentum" in opt.defaults or "betas" in opt.defaults


SchedFactory = Callable[[torch.optim.Optimizer], Any]

SCHEDULERS: dict[str, SchedFactory] = {
    "LambdaLR": lambda o: S.LambdaLR(o, lambda e: 0.9**e),
    "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda e: 0.95),
    "StepLR": lambda o: S.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: S.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.3),
    "ConstantLR": lambda o: S.ConstantLR(o, factor=0.5, total_iters=4),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.2, total_iters=6),
    "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.8),
    "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=10, power=2.0),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=5, eta_min=1e-4),
    "ChainedScheduler": lambda o: S.ChainedScheduler(
        [S.ConstantLR(o, factor=0.3, total_iters=3), S.ExponentialLR(o, gamma=0.9)]
    ),
    "SequentialLR": lambda o: S.SequentialLR(
        o,
        [S.LinearLR(o, start_factor=0.1, total_iters=4), S.CosineAnnealingLR(o, T_max=8)],
        milestones=[4],
    ),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=1),
    "CyclicLR": lambda o: S.CyclicLR(
        o,
        base_lr=1e-3,
        max_lr=2e-2,
        step_size_up=3,
        cycle_momentum=_cycles_momentum(o),
        base_momentum=0.8,
        max_momentum=0.95,
    ),
    "OneCycleLR": lambda o: S.OneCycleLR(
        o, max_lr=3e-2, total_steps=STEPS, cycle_momentum=_cycles_momentum(o)
    ),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2),
}


def _hyper(opt: torch.optim.Optimizer) -> list[tuple[Any, ...]]:
    """What a scheduler changes: lr, and momentum / betas where the optimizer has them."""
    return [(g["lr"], g.get("momentum"), g.get("betas")) for g in opt.param_groups]


def _train(
    kind: str,
    name: str,
    kwargs: dict[str, Any],
    make_sched: SchedFactory,
    start: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
) -> tuple[list[torch.Tensor], list[list[tuple[Any, ...]]]]:
    ps = [p.clone().requires_grad_(True) for p in start]
    opt = integration_cases.make(kind, name, ps, kwargs)
    sched = make_sched(opt)
    seen = []
    for step, gs in enumerate(grads):
        for p, g in zip(ps, gs, strict=True):
            p.grad = g.clone()
        opt.step()
        if isinstance(sched, S.ReduceLROnPlateau):
            sched.step(1.0 if step < 3 else 2.0)  # improves, then stalls: the lr drops
        else:
            sched.step()
        seen.append(_hyper(opt))
    return [p.detach() for p in ps], seen


@pytest.mark.parametrize("sched_name", list(SCHEDULERS))
@pytest.mark.parametrize(("name", "kwargs"), integration_cases.params())
def test_scheduler_matches_torch(name: str, kwargs: dict[str, Any], sched_name: str) -> None:
    make_sched = SCHEDULERS[sched_name]
    start = optim_testing.make_params(SHAPES, torch.float64)
    grads = optim_testing.random_grads(start, STEPS)
    ours, our_hyper = _train("gradfuse", name, kwargs, make_sched, start, grads)
    theirs, their_hyper = _train("torch", name, kwargs, make_sched, start, grads)
    # The schedule itself is plain Python on param_groups: exactly the same numbers.
    assert our_hyper == their_hyper
    assert len({h[0][0] for h in our_hyper}) > 1, "the schedule never changed the lr"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        tolerances.assert_close(a, b, TOL, f"{name} + {sched_name}: param {i}")


def _save_load(obj: Any, map_location: str | None = None) -> Any:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True, map_location=map_location)


def _resume_case(
    name: str,
    kwargs: dict[str, Any],
    first: str,
    second: str,
    device: str = "cpu",
    load_device: str = "cpu",
) -> None:
    """``first`` trains 4 steps with a OneCycle schedule, its optimizer + scheduler state goes
    through torch.save / torch.load(weights_only=True, map_location=load_device), ``second``
    resumes on ``load_device`` for 4 more. The reference is the same with torch's optimizer
    on both sides (not the uninterrupted run: torch's load_state_dict casts some scalar state
    to the param dtype, e.g. NAdam's mu_product, so even torch's resumed run differs from its
    uninterrupted run in the last bits)."""
    start = optim_testing.make_params(SHAPES, torch.float64, device)
    grads = optim_testing.random_grads(start, 8)

    def setup(kind: str, dev: str, init: list[torch.Tensor]) -> tuple[list[torch.Tensor], Any, Any]:
        ps = [p.detach().to(dev).clone().requires_grad_(True) for p in init]
        opt = integration_cases.make(kind, name, ps, kwargs)
        sched = S.OneCycleLR(opt, max_lr=3e-2, total_steps=8, cycle_momentum=_cycles_momentum(opt))
        return ps, opt, sched

    def train(ps: list[torch.Tensor], opt: Any, sched: Any, steps: range) -> None:
        for s in steps:
            for p, g in zip(ps, grads[s], strict=True):
                p.grad = g.to(p.device).clone()
            opt.step()
            sched.step()

    def resumed(first: str, second: str) -> tuple[list[torch.Tensor], Any]:
        ps, opt, sched = setup(first, device, start)
        train(ps, opt, sched, range(4))
        ckpt = _save_load(
            {"params": ps, "optim": opt.state_dict(), "sched": sched.state_dict()}, load_device
        )
        ps2, opt2, sched2 = setup(second, load_device, ckpt["params"])
        opt2.load_state_dict(ckpt["optim"])
        sched2.load_state_dict(ckpt["sched"])
        for st in opt2.state.values():
            for v in st.values():
                if torch.is_tensor(v) and v.dim() > 0:
                    assert v.device.type == load_device
        train(ps2, opt2, sched2, range(4, 8))
        return ps2, opt2

    got, got_opt = resumed(first, second)
    want, want_opt = resumed("torch", "torch")
    assert _hyper(got_opt) == _hyper(want_opt)
    assert got_opt.state_dict()["state"].keys() == want_opt.state_dict()["state"].keys()
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        msg = f"{name}: {first} on {device} -> {second} on {load_device}, param {i}"
        tolerances.assert_close(a.detach().cpu(), b.detach().cpu(), TOL, msg)


@pytest.mark.parametrize(
    ("first", "second"),
    [("gradfuse", "gradfuse"), ("gradfuse", "torch"), ("torch", "gradfuse")],
)
@pytest.mark.parametrize(("name", "kwargs"), integration_cases.params())
def test_checkpoint_round_trip(name: str, kwargs: dict[str, Any], first: str, second: str) -> None:
    _resume_case(name, kwargs, first, second)


@pytest.mark.cuda
@pytest.mark.parametrize(("device", "load_device"), [("cuda", "cpu"), ("cpu", "cuda")])
@pytest.mark.parametrize(("name", "kwargs"), integration_cases.params())
def test_checkpoint_map_location(
    name: str, kwargs: dict[str, Any], device: str, load_device: str
) -> None:
    _resume_case(name, kwargs, "gradfuse", "gradfuse", device, load_device)


def test_state_dict_is_weights_only_loadable() -> None:
    # Everything gradfuse puts in a state_dict is a tensor or a plain Python value: the
    # weights_only unpickler accepts it without any allow-listing.
    for name, kwargs in integration_cases.available():
        ps = [torch.randn(3, requires_grad=True)]
        opt = integration_cases.make("gradfuse", name, ps, kwargs)
        ps[0].grad = torch.randn(3)
        opt.step()
        loaded = _save_load(opt.state_dict())
        assert loaded["param_groups"] == opt.state_dict()["param_groups"], name
