"""gradfuse.optim.RAdam: torch.optim.RAdam with a fused multi-tensor step."""

from __future__ import annotations

from typing import Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import RADAM, radam_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class RAdam(FusedOptimizer):
    """RAdam (rectified Adam), fused: a drop-in for :class:`torch.optim.RAdam`.

    Same arguments, defaults, errors, state (``step``, ``exp_avg``, ``exp_avg_sq``) and
    ``state_dict`` layout as torch; ``foreach`` is accepted and changes nothing,
    ``differentiable=True`` raises NotImplementedError; AMP unscaling happens in the update.
    """

    _update_fn = staticmethod(radam_)
    _spec = RADAM
    _sparse_error = "RAdam does not support sparse gradients"
    _graph_capture_health_check = True
    _setstate_keys = (
        "foreach",
        "maximize",
        "differentiable",
        "decoupled_weight_decay",
        "capturable",
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.RAdam.
        check_nonnegative(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        super().__init__(params, torch_defaults(locals()), **options)
