"""gradfuse.optim.RMSprop: torch.optim.RMSprop with a fused multi-tensor step."""

from __future__ import annotations

from typing import Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import RMSPROP, rmsprop_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class RMSprop(FusedOptimizer):
    """RMSprop (optionally centered, with momentum), fused.

    A drop-in for :class:`torch.optim.RMSprop`: the same arguments (torch's RMSprop has no
    ``fused`` argument, so neither does this one), defaults, errors, param groups, state
    (``step``, ``square_avg``, ``momentum_buffer``, ``grad_avg``) and ``state_dict`` layout;
    checkpoints load into either. Every step updates all params of a (device, dtype) group in
    one native call.

    ``foreach`` is accepted; ``capturable`` keeps ``step`` and a tensor ``lr`` on the param's
    device and reads them there (no host synchronisation: ``step()`` can be captured in a CUDA
    graph); ``differentiable=True`` raises NotImplementedError. AMP:
    ``torch.amp.GradScaler`` unscales inside the update; a step with inf/NaN gradients changes
    nothing. ``max_grad_norm`` (gradfuse extension, keyword-only): see
    :class:`~gradfuse.optim.FusedOptimizer`.
    """

    _update_fn = staticmethod(rmsprop_)
    _spec = RMSPROP
    _sparse_error = "RMSprop does not support sparse gradients"
    _setstate_keys = ("momentum", "centered", "foreach", "maximize", "differentiable", "capturable")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.RMSprop.
        check_nonnegative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        super().__init__(params, torch_defaults(locals()), **options)
