"""The low-level layer: in-place fused updates and loss-with-gradient functions.

No autograd is involved. Every function accepts numpy arrays (CPU) and torch tensors (CPU, or
CUDA when gradfuse was built with CUDA).
"""

from __future__ import annotations

from gradfuse.functional._more import adagrad_, lion_, rmsprop_
from gradfuse.functional._optim import sgd_

__all__ = ["adagrad_", "lion_", "rmsprop_", "sgd_"]
