"""State in another memory layout than its param: torch's optimizers do not care, so neither may
gradfuse's. It arises when a checkpoint saved from a row-major model is loaded into a
channels-last one, and when a model is re-laid mid-run (``model.to(memory_format=...)`` swaps
each param's data, and the optimizer's state keeps the old layout). The kernels walk a param and
its state in one memory order, so the optimizer re-lays the state (8-bit state: dequantized in
its own memory order, quantized in the param's)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import gradfuse
from gradfuse.optim import dequantize_blockwise, dequantize_state_dict, quantize_blockwise
from optim_testing import EIGHT_BIT

# Every optimizer with state, in a configuration that uses all of it.
FLOAT_STATE = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("AdamW", {"lr": 1e-2}),
    ("Adamax", {"lr": 1e-2}),
    ("NAdam", {"lr": 1e-2, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("RAdam", {"lr": 1e-2}),
    ("Adagrad", {"lr": 1e-2, "lr_decay": 0.01}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9}),
    ("Lion", {"lr": 1e-3}),
    ("ADOPT", {"lr": 1e-2}),
    ("AdEMAMix", {"lr": 1e-2}),
    ("LAMB", {"lr": 1e-2}),
    ("ScheduleFreeAdamW", {"lr": 1e-2}),
    ("ScheduleFreeSGD", {"lr": 1e-2}),
    ("AdamW", {"lr": 1e-2, "state_dtype": torch.bfloat16}),
]
SHAPES = [(8, 4, 3, 3), (6, 5)]  # a convolution's weight, a linear one (transposed)


def _relaid(x: torch.Tensor) -> torch.Tensor:
    """``x``'s values in a new block of memory in another layout than row-major."""
    if x.dim() == 4:
        return x.clone(memory_format=torch.channels_last)
    return x.t().clone(memory_format=torch.contiguous_format).t()


def _params(start: list[torch.Tensor], relaid: bool) -> list[torch.Tensor]:
    return [(_relaid(x) if relaid else x.clone()).requires_grad_(True) for x in start]


def _make(cls: Any, params: list[torch.Tensor], kwargs: dict[str, Any]) -> Any:
    opt = cls(params, **kwargs)
    if hasattr(opt, "train"):  # schedule-free: steps run in train mode
        opt.train()
    return opt


def _steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: Any) -> None:
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()


def _problem(seed: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(4)]
    return start, grads


@pytest.mark.parametrize(("name", "kwargs"), FLOAT_STATE, ids=str)
@pytest.mark.parametrize("how", ["resume", "mid_run"])
def test_state_follows_the_params_layout(name: str, kwargs: dict[str, Any], how: str) -> None:
    """The same bits as a run that never changed layout, and state in the param's layout."""
    cls = getattr(gradfuse.optim, name)
    start, grads = _problem(0)
    ps = _params(start, relaid=False)
    straight = _make(cls, ps, kwargs)
    _steps(straight, ps, grads)

    qs = _params(start, relaid=False)
    opt = _make(cls, qs, kwargs)
    _steps(opt, qs, grads[:2])
    if how == "resume":  # a channels-last model loads the row-major model's checkpoint
        saved = opt.state_dict()
        qs = [_relaid(q.detach()).requires_grad_(True) for q in qs]
        opt = _make(cls, qs, kwargs)
        opt.load_state_dict(saved)
    else:  # model.to(memory_format=...) swaps each param's data under the optimizer
        for q in qs:
            q.data = _relaid(q.detach())
    _steps(opt, qs, grads[2:])
    for q, p in zip(qs, ps, strict=True):
        assert q.stride() == _relaid(p).stride()
        assert torch.equal(q.detach(), p.detach())
        for key, value in opt.state[q].items():
            if torch.is_tensor(value) and value.shape == q.shape:
                assert value.stride() == q.stride(), key
                assert torch.equal(value, straight.state[p][key]), key


@pytest.mark.parametrize(("name", "kwargs"), [*EIGHT_BIT, ("Muon", {"lr": 0.02})], ids=str)
@pytest.mark.parametrize("how", ["fresh", "resume", "mid_run"])
def test_8bit_state_in_the_params_layout(name: str, kwargs: dict[str, Any], how: str) -> None:
    """8-bit state takes the param's layout (its blocks of 256 counted in that memory order);
    re-laid, it holds the same values but for requantizing them in new blocks."""
    cls = getattr(gradfuse.optim, f"{name}8bit")
    kwargs = {**kwargs, "min_8bit_size": 16}
    start, grads = _problem(1)
    qs = _params(start, relaid=how == "fresh")
    opt = _make(cls, qs, kwargs)
    _steps(opt, qs, grads[:2])
    before = dequantize_state_dict(opt.state_dict())["state"]
    if how == "resume":
        saved = opt.state_dict()
        qs = [_relaid(q.detach()).requires_grad_(True) for q in qs]
        opt = _make(cls, qs, kwargs)
        opt.load_state_dict(saved)
    elif how == "mid_run":
        for q in qs:
            q.data = _relaid(q.detach())
    if how != "fresh":
        # Nothing stepped yet: dequantized state as before, within requantization (half the
        # map's widest gap, 0.9 / 64 / 2 of the block's absmax, below 1% of the largest value).
        opt._relayout_state(qs)
        after = dequantize_state_dict(opt.state_dict())["state"]
        for pid, st in before.items():
            for key, value in st.items():
                if torch.is_tensor(value) and value.dim() > 0:
                    tol = 0.01 * float(value.abs().max())
                    torch.testing.assert_close(after[pid][key], value, rtol=0, atol=tol)
    _steps(opt, qs, grads[2:])
    for q in qs:
        for key, value in opt.state[q].items():
            if torch.is_tensor(value) and value.dtype == torch.uint8:
                assert value.stride() == q.stride(), key
        assert torch.isfinite(q).all()


def test_blockwise_quantization_counts_blocks_in_memory_order() -> None:
    """A transposed tensor's codes keep its layout; its blocks of 256 are its memory's, so the
    codes in memory order are those of the row-major tensor of its memory order."""
    gen = torch.Generator().manual_seed(2)
    memory = torch.randn(96, 80, generator=gen) * torch.rand(96, 1, generator=gen)
    x = memory.t()  # (80, 96), strides (1, 80)
    for signed in (True, False):
        src = x if signed else x.abs()
        codes, absmax = quantize_blockwise(src, signed)
        want_codes, want_absmax = quantize_blockwise(src.t().contiguous(), signed)
        assert codes.stride() == x.stride()
        assert torch.equal(codes.t(), want_codes)
        assert torch.equal(absmax, want_absmax)
        values = dequantize_blockwise(codes, absmax, signed)
        assert values.stride() == x.stride()
        assert torch.equal(values.t(), dequantize_blockwise(want_codes, want_absmax, signed))
