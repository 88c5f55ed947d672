"""The low-level layer: in-place fused updates and loss-with-gradient functions.

No autograd is involved. Every function accepts numpy arrays (CPU) and torch tensors (CPU, or
CUDA when gradfuse was built with CUDA).
"""

from __future__ import annotations

import sys

from gradfuse._compile import register_ops
from gradfuse.functional._optim import sgd_

if "torch" in sys.modules:  # torch.compile support; numpy-only users never load torch
    register_ops()

__all__ = ["sgd_"]
