"""gradfuse.optim.NAdam: torch.optim.NAdam with a fused multi-tensor step."""

from __future__ import annotations

from typing import Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import NADAM, nadam_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class NAdam(FusedOptimizer):
    """NAdam (Adam with Nesterov momentum), fused: a drop-in for :class:`torch.optim.NAdam`.

    Same arguments, defaults (``momentum_decay``, ``decoupled_weight_decay``), errors, state
    (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``) and ``state_dict`` layout as torch;
    ``foreach`` is accepted and changes nothing, ``differentiable=True`` raises
    NotImplementedError; AMP unscaling happens in the update.
    """

    _update_fn = staticmethod(nadam_)
    _spec = NADAM
    _sparse_error = "NAdam does not support sparse gradients"
    _graph_capture_health_check = True
    _setstate_keys = (
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
        "decoupled_weight_decay",
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.NAdam.
        check_nonnegative(
            lr=lr, eps=eps, betas=betas, weight_decay=weight_decay, momentum_decay=momentum_decay
        )
        super().__init__(params, torch_defaults(locals()), **options)
