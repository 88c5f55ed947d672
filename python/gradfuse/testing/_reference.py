"""The base of the float64 reference optimizers: torch's ``step(closure)`` around the update."""

from __future__ import annotations

from collections.abc import Callable

import torch


class ReferenceOptimizer(torch.optim.Optimizer):
    """A reference optimizer: ``step`` evaluates the closure (with grad enabled), then runs
    :meth:`_update` (the algorithm, written out plainly in float64) without grad."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self) -> None:
        raise NotImplementedError
