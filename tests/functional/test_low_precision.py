"""LowPrecision.is_default_for (functional/_multi_tensor.py): which params' native calls run the
default storage. The CUDA kernels that have only that storage (LAMB, Adafactor) refuse the
others before anything is written, so a wrong answer refuses a valid call or lets a CUDA param
reach a kernel that fails after a mixed call's CPU groups have stepped."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from gradfuse.functional._multi_tensor import LowPrecision


def _answers(lowprec: LowPrecision, params: list[torch.Tensor], states: list[Any]) -> list[bool]:
    slots = [("params", params), ("grads", [torch.zeros_like(p) for p in params])]
    slots.append(("exp_avgs", states))
    buffers, _ = lowprec.prepare_buffers("op_", slots, ("params", "exp_avgs"))
    return [lowprec.is_default_for(i, buffers, len(params)) for i in range(len(params))]


def test_default_call() -> None:
    ps = [torch.randn(5), torch.randn(3, dtype=torch.float64)]
    assert _answers(LowPrecision(), ps, [torch.zeros_like(p) for p in ps]) == [True, True]


def test_master_weights_only_where_a_param_has_a_master_copy() -> None:
    # float32 params of a master-weights call have no copy: their group runs the default storage.
    ps = [torch.randn(5), torch.randn(5).bfloat16(), torch.randn(4)]
    masters = [None, ps[1].float(), None]
    lp = LowPrecision(master_params=masters)
    assert _answers(lp, ps, [torch.zeros_like(p) for p in ps]) == [True, False, True]


def test_state_of_another_dtype_only_for_its_param() -> None:
    ps = [torch.randn(5), torch.randn(5).bfloat16()]
    states = [torch.zeros(5), torch.zeros(5)]  # float32 state for the bfloat16 param
    assert _answers(LowPrecision(), ps, states) == [True, False]


@pytest.mark.parametrize("how", ["stochastic", "kahan"])
def test_rounding_policies_apply_to_every_param(how: str) -> None:
    ps = [torch.randn(5).bfloat16(), torch.randn(7).bfloat16()]
    lp = (
        LowPrecision(rounding="stochastic", seed=3)
        if how == "stochastic"
        else LowPrecision(kahan_comps=[torch.zeros_like(p) for p in ps])
    )
    assert _answers(lp, ps, [torch.zeros_like(p) for p in ps]) == [False, False]
