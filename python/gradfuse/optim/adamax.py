"""gradfuse.optim.Adamax: torch.optim.Adamax with a fused multi-tensor step."""

from __future__ import annotations

from typing import Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import ADAMAX, adamax_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class Adamax(FusedOptimizer):
    """Adamax (Adam with the infinity norm), fused: a drop-in for :class:`torch.optim.Adamax`.

    Same arguments, defaults, errors, state (``step``, ``exp_avg``, ``exp_inf``) and
    ``state_dict`` layout as torch; ``foreach`` is accepted and changes nothing,
    ``differentiable=True`` raises NotImplementedError; AMP unscaling happens in the update.
    """

    _update_fn = staticmethod(adamax_)
    _spec = ADAMAX
    _sparse_error = "Adamax does not support sparse gradients"
    _graph_capture_health_check = True
    _setstate_keys = ("foreach", "maximize", "differentiable", "capturable")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adamax.
        check_nonnegative(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        super().__init__(params, torch_defaults(locals()), **options)
