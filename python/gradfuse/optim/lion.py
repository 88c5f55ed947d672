"""gradfuse.optim.Lion: the Lion optimizer (Chen et al. 2023), fused."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._more import lion_
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    check_fused_foreach,
    refuse_differentiable,
)


class Lion(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """Lion ("Symbolic Discovery of Optimization Algorithms", Chen et al. 2023), fused.

    Per step, with ``m`` the state ``exp_avg`` (zeros at first)::

        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay) - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g

    Torch has no Lion; the arguments follow torch's conventions (``betas`` as a pair,
    ``weight_decay`` decoupled as in the paper, ``maximize`` keyword-only; ``foreach``,
    ``fused`` accepted, ``differentiable=True`` raises NotImplementedError). The paper suggests
    a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger. AMP and
    ``max_grad_norm`` as for every gradfuse optimizer (see :class:`MaxGradNormMixin`).
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        check_fused_foreach(fused, foreach, differentiable)
        refuse_differentiable("Lion", differentiable)
        self._init_max_grad_norm(max_grad_norm)
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        self._step_supports_amp_scaling = True

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        def init(p: Tensor, state: dict[str, Any]) -> None:
            state["exp_avg"] = self._state_zeros(p)

        params, grads, state = self._gather_state(
            group, ("exp_avg",), init, sparse_error="Lion does not support sparse gradients"
        )
        beta1, beta2 = group["betas"]
        lion_(
            params,
            grads,
            state["exp_avg"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            **amp,
            **self._low_precision_kwargs(params),
        )
