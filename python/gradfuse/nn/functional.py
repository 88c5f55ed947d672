"""Drop-ins for torch.nn.functional's losses (same signatures), with fused loss + gradient."""

from __future__ import annotations

from gradfuse.nn._elementwise import (
    binary_cross_entropy_with_logits,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from gradfuse.nn._softmax import cross_entropy, nll_loss

__all__ = [
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]
