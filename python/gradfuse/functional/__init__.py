"""The low-level layer: in-place fused updates and loss-with-gradient functions.

No autograd is involved. Every function accepts numpy arrays (CPU) and torch tensors (CPU, or
CUDA when gradfuse was built with CUDA).
"""

from __future__ import annotations

import sys

from gradfuse._compile import register_ops
from gradfuse.functional._adopt import ademamix_, adopt_
from gradfuse.functional._losses_buffers import grad_buffer_cache_info, set_grad_buffer_cache
from gradfuse.functional._losses_elementwise import (
    binary_cross_entropy_with_logits_with_grad,
    huber_loss_with_grad,
    kl_div_with_grad,
    l1_loss_with_grad,
    mse_loss_with_grad,
    smooth_l1_loss_with_grad,
)
from gradfuse.functional._losses_softmax import cross_entropy_with_grad, nll_loss_with_grad
from gradfuse.functional._muon import muon_
from gradfuse.functional._reducing import adafactor_, lamb_
from gradfuse.functional._schedule_free import (
    ScheduleFreeGroup,
    schedule_free_adamw_,
    schedule_free_eval_,
    schedule_free_sgd_,
    schedule_free_train_,
)
from gradfuse.functional._updates import (
    adagrad_,
    adam_,
    adamax_,
    adamw_,
    lion_,
    nadam_,
    radam_,
    rmsprop_,
    sgd_,
)

if "torch" in sys.modules:  # torch.compile support; numpy-only users never load torch
    register_ops()

__all__ = [
    "ScheduleFreeGroup",
    "adafactor_",
    "adagrad_",
    "adam_",
    "adamax_",
    "adamw_",
    "ademamix_",
    "adopt_",
    "binary_cross_entropy_with_logits_with_grad",
    "cross_entropy_with_grad",
    "grad_buffer_cache_info",
    "huber_loss_with_grad",
    "kl_div_with_grad",
    "l1_loss_with_grad",
    "lamb_",
    "lion_",
    "mse_loss_with_grad",
    "muon_",
    "nadam_",
    "nll_loss_with_grad",
    "radam_",
    "rmsprop_",
    "schedule_free_adamw_",
    "schedule_free_eval_",
    "schedule_free_sgd_",
    "schedule_free_train_",
    "set_grad_buffer_cache",
    "sgd_",
    "smooth_l1_loss_with_grad",
]
