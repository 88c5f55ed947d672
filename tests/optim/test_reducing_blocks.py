"""LAMB and Adafactor on the CPU reduce per tensor over blocks fixed by each tensor's size
(src/cpu/blocks.h), in passes that run the blocks forward and backward in turn. A tensor's result
must not depend on the other tensors of the call, nor on where its blocks fall in a pass: one
call over many tensors (big and small, factored and not) gives, bitwise, what one call per
tensor gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from gradfuse.optim import LAMB, Adafactor

# Tensors of many blocks and of one, matrices and vectors.
SHAPES = [(1500, 1000), (1000,), (384,), (700, 300), (2000, 1600), (3, 5, 7), (640,)]

OPTIMIZERS: dict[str, Callable[[list[torch.Tensor]], Any]] = {
    "lamb": lambda ps: LAMB(ps, lr=1e-2, weight_decay=1e-2, max_grad_norm=0.0),
    "adafactor": lambda ps: Adafactor(ps, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_call_equals_one_call_per_tensor(name: str) -> None:
    make = OPTIMIZERS[name]
    gen = torch.Generator().manual_seed(18)
    together = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(2)]
    alone = [p.clone() for p in together]
    before = [p.clone() for p in together]
    opt = make(together)
    singles = [make([p]) for p in alone]
    for step_grads in grads:
        for p, q, g in zip(together, alone, step_grads, strict=True):
            p.grad = g.clone()
            q.grad = g.clone()
        opt.step()
        for single in singles:
            single.step()
    for i, (p, q) in enumerate(zip(together, alone, strict=True)):
        assert torch.equal(p, q), f"{name}: params[{i}] {tuple(p.shape)} differs"
        assert not torch.equal(p, before[i]), f"{name}: params[{i}] did not move"
