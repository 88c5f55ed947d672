"""FusedOptimizer.step outside torch's profile_hook_step wrapper unless something observes it.

The wrapper (a profiler range and the step hooks) costs ~33 us a step even when nothing uses it,
so FusedOptimizer.step calls the step directly and takes torch's wrapper, unchanged, when a
profiler runs, a hook is registered (on the optimizer or globally) or torch.compile traces.
Whichever way a step goes, what torch's wrapper promises must hold.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import gradfuse
from gradfuse.optim import _optimizer


def _sgd() -> tuple[torch.nn.Parameter, gradfuse.optim.SGD]:
    p = torch.nn.Parameter(torch.randn(7))
    p.grad = torch.randn(7)
    return p, gradfuse.optim.SGD([p], lr=0.1, momentum=0.9)


def test_torch_does_not_wrap_the_step_again() -> None:
    _, opt = _sgd()
    assert type(opt).step is _optimizer.FusedOptimizer.step
    assert getattr(type(opt).step, "hooked", False)
    assert not _optimizer._observed(opt)


def test_a_step_under_the_profiler_is_named_as_torch_names_it() -> None:
    _, opt = _sgd()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    names = [e.name for e in prof.events()]
    assert "Optimizer.step#SGD.step" in names


@pytest.mark.parametrize("where", ["optimizer", "global"])
def test_hooks_run_once_per_step_and_may_change_the_arguments(where: str) -> None:
    p, opt = _sgd()
    calls: list[str] = []

    def pre(o: Any, args: Any, kwargs: Any) -> Any:
        calls.append("pre")
        return args, {"closure": lambda: calls.append("closure") or 1.0}

    def post(o: Any, args: Any, kwargs: Any) -> None:
        calls.append("post")

    if where == "optimizer":
        handles = [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]
    else:
        handles = [register_optimizer_step_pre_hook(pre), register_optimizer_step_post_hook(post)]
    try:
        before = p.detach().clone()
        assert opt.step() == 1.0  # the pre hook's closure ran: its loss is returned
        assert calls == ["pre", "closure", "post"]
        assert not torch.equal(p.detach(), before)
    finally:
        for h in handles:
            h.remove()
    calls.clear()
    opt.step()
    assert calls == []  # removed: the direct path again


def test_schedule_free_hooks_run_once_and_eval_mode_still_refuses() -> None:
    p = torch.nn.Parameter(torch.randn(7))
    p.grad = torch.randn(7)
    opt = gradfuse.optim.ScheduleFreeAdamW([p], lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    with pytest.raises(Exception, match="train mode"):
        opt.step()
    opt.train()
    opt.step()
    assert calls == ["pre", "pre"]
