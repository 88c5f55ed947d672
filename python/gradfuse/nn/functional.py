"""Drop-ins for :mod:`torch.nn.functional` losses: same signatures and results; the loss and
its input gradient come from one fused native pass."""

from __future__ import annotations

from gradfuse.nn._softmax import cross_entropy, nll_loss

__all__ = ["cross_entropy", "nll_loss"]
