"""gradfuse.optim.Adamax: torch.optim.Adamax with a fused multi-tensor step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._adam import adamax_
from gradfuse.optim._base import (
    LowPrecisionMixin,
    MaxGradNormMixin,
    capturable_step,
    check_capturable,
    grad_scaling,
    real_view,
    refuse_differentiable,
    scalar_state,
    upgrade_scalar_state,
)


class Adamax(LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """Adamax (Adam with the infinity norm), fused: a drop-in for :class:`torch.optim.Adamax`.

    Same arguments, defaults, errors, state (``step``, ``exp_avg``, ``exp_inf``) and
    ``state_dict`` layout as torch; ``foreach`` is accepted and changes nothing,
    ``differentiable=True`` raises NotImplementedError; AMP unscaling happens in the update.
    """

    _step_supports_amp_scaling = True

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
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")

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
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        self._init_max_grad_norm(max_grad_norm)
        refuse_differentiable("Adamax", differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
        upgrade_scalar_state(self, "step", lambda g: g["capturable"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform a single optimization step.

        Args:
            closure: a closure that reevaluates the model and returns the loss (optional).
        """
        self._accelerator_graph_capture_health_check()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        scaling = grad_scaling(self)
        clip_coef = self._clip_coef(scaling["grad_scale"])
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_infs: list[Tensor] = []
            steps: list[Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                if p.grad.is_sparse:
                    raise RuntimeError("Adamax does not support sparse gradients")
                grads.append(p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = scalar_state(0.0, p.device, group["capturable"])
                    state["exp_avg"] = self._state_zeros(p)
                    state["exp_inf"] = self._state_zeros(p)
                self._low_precision_state(p, state)
                exp_avgs.append(state["exp_avg"])
                exp_infs.append(state["exp_inf"])
                steps.append(state["step"])
            check_capturable(group["capturable"], params, steps, what="params and state_steps")
            beta1, beta2 = group["betas"]
            adamax_(
                [real_view(t) for t in params],
                [real_view(t) for t in grads],
                [real_view(t) for t in exp_avgs],
                [real_view(t) for t in exp_infs],
                state_steps=steps,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                maximize=group["maximize"],
                **scaling,
                clip_coef=clip_coef,
                capturable=capturable_step(group, params),
                **self._low_precision_kwargs(params),
            )
        return loss
