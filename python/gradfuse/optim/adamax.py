"""gradfuse.optim.Adamax: torch.optim.Adamax with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import ADAMAX, adamax_
from gradfuse.optim._optimizer import FusedOptimizer
from gradfuse.optim._torch_compat import check_nonnegative


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
    _setstate_defaults: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

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
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adamax.
        check_nonnegative(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(
            params, defaults, max_grad_norm, master_weights, state_dtype, rounding, kahan
        )
