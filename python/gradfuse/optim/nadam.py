"""gradfuse.optim.NAdam: torch.optim.NAdam with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._adam import nadam_
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    check_adam_hparams,
    check_capturable,
    refuse_differentiable,
    scalar_state,
    upgrade_scalar_state,
)


class NAdam(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """NAdam (Adam with Nesterov momentum), fused: a drop-in for :class:`torch.optim.NAdam`.

    Same arguments, defaults (``momentum_decay``, ``decoupled_weight_decay``), errors, state
    (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``) and ``state_dict`` layout as torch;
    ``foreach`` is accepted and changes nothing, ``differentiable=True`` raises
    NotImplementedError; AMP unscaling happens in the update.
    """

    _step_supports_amp_scaling = True
    _graph_capture_health_check = True

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
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        # Same checks, same order, same messages as torch.optim.NAdam.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        check_adam_hparams(lr, eps, betas, weight_decay)
        if not momentum_decay >= 0.0:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        self._init_max_grad_norm(max_grad_norm)
        refuse_differentiable("NAdam", differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
        upgrade_scalar_state(self, "step", lambda g: g["capturable"])
        upgrade_scalar_state(self, "mu_product", lambda g: g["capturable"])

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        def init(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = scalar_state(0.0, p.device, group["capturable"])
            state["mu_product"] = scalar_state(1.0, p.device, group["capturable"])
            state["exp_avg"] = self._state_zeros(p)
            state["exp_avg_sq"] = self._state_zeros(p)

        params, grads, state = self._gather_state(
            group,
            ("exp_avg", "exp_avg_sq", "mu_product", "step"),
            init,
            sparse_error="NAdam does not support sparse gradients",
        )
        check_capturable(
            group["capturable"],
            params,
            state["mu_product"],
            state["step"],
            what="params, mu_products and state_steps",
        )
        self._adam_family_update(
            nadam_,
            group,
            amp,
            params,
            grads,
            [state["exp_avg"], state["exp_avg_sq"]],
            state["mu_product"],
            steps=state["step"],
            momentum_decay=group["momentum_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )
