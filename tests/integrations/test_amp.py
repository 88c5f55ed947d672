"""torch.amp with gradfuse optimizers: a GradScaler loop under bfloat16 autocast on the CPU
(float16 on CUDA) gives the same parameters as the same loop with torch's optimizer, including
a step that the scaler skips because a gradient is inf. Optimizers that advertise
``_step_supports_amp_scaling`` get the scale and the inf flag inside their fused step;
the others are unscaled by the GradScaler first: both paths must agree with torch."""

from __future__ import annotations

import copy
from typing import Any

import integration_cases
import pytest
import torch
from torch import nn

import tolerances

STEPS = 6
INF_STEP = 3  # this step's gradients contain an inf: the scaler must skip it and back off


def _loop(kind: str, name: str, kwargs: dict[str, Any], model: nn.Module, device: str) -> Any:
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    opt = integration_cases.make(kind, name, model.parameters(), kwargs)
    scaler = torch.amp.GradScaler(device, init_scale=2.0**10, growth_interval=2)
    scales = []
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 12, generator=g).to(device)
        opt.zero_grad()
        with torch.autocast(device, dtype=amp_dtype):
            loss = model(x).float().square().mean()
        scaler.scale(loss).backward()
        if step == INF_STEP:
            next(model.parameters()).grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
    return [p.detach().cpu() for p in model.parameters()], scales


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize(("name", "kwargs"), integration_cases.params())
def test_grad_scaler_loop_matches_torch(name: str, kwargs: dict[str, Any], device: str) -> None:
    model = nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Linear(16, 4)).to(device)
    start = [p.detach().clone().cpu() for p in model.parameters()]
    ours, our_scales = _loop("gradfuse", name, kwargs, copy.deepcopy(model), device)
    theirs, their_scales = _loop("torch", name, kwargs, copy.deepcopy(model), device)
    assert our_scales == their_scales  # the same steps were skipped and grown
    assert our_scales[INF_STEP] < our_scales[INF_STEP - 1]  # the inf step backed off
    for i, (a, b, s) in enumerate(zip(ours, theirs, start, strict=True)):
        assert torch.isfinite(a).all(), f"param {i}: the inf step was not skipped"
        # float32 master weights; the autocast matmuls round the same way in both runs.
        tolerances.assert_close(a, b, tolerances.TRAJECTORY[torch.float32], f"param {i}")
        assert not torch.equal(a, s), f"param {i} never moved"
