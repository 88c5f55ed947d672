"""gradfuse.optim.RMSprop: torch.optim.RMSprop with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._more import rmsprop_
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    capturable_step,
    check_capturable,
    refuse_differentiable,
    scalar_dtype,
)


class RMSprop(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
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
    :class:`MaxGradNormMixin`.
    """

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
        *,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        # Same checks, same order, same messages as torch.optim.RMSprop.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not momentum >= 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not alpha >= 0.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        refuse_differentiable("RMSprop", differentiable)
        self._init_max_grad_norm(max_grad_norm)
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        self._step_supports_amp_scaling = True

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    step_val = float(p_state["step"])
                    p_state["step"] = (
                        torch.tensor(step_val, dtype=scalar_dtype(), device=p.device)
                        if group["capturable"]
                        else torch.tensor(step_val, dtype=scalar_dtype())
                    )

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        def init(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = (
                torch.zeros((), dtype=scalar_dtype(), device=p.device)
                if group["capturable"]
                else torch.zeros((), dtype=scalar_dtype())
            )
            state["square_avg"] = self._state_zeros(p)
            if group["momentum"] > 0:
                state["momentum_buffer"] = self._state_zeros(p)
            if group["centered"]:
                state["grad_avg"] = self._state_zeros(p)

        keys: tuple[str, ...] = ("square_avg", "step")
        if group["momentum"] > 0:
            keys += ("momentum_buffer",)
        if group["centered"]:
            keys += ("grad_avg",)
        params, grads, state = self._gather_state(
            group, keys, init, sparse_error="RMSprop does not support sparse gradients"
        )
        check_capturable(group["capturable"], params, state["step"], what="params and state_steps")
        rmsprop_(
            params,
            grads,
            state["square_avg"],
            state.get("grad_avg", []),
            state.get("momentum_buffer", []),
            state["step"],
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=group["maximize"],
            **amp,
            capturable=capturable_step(group, params),
            **self._low_precision_kwargs(params),
        )
