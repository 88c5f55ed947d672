"""gradfuse.optim.Adagrad: torch.optim.Adagrad with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adagrad import adagrad as torch_adagrad
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._more import adagrad_
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    check_fused_foreach,
    refuse_differentiable,
    scalar_dtype,
)


class Adagrad(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """Adagrad, fused.

    A drop-in for :class:`torch.optim.Adagrad`: the same arguments, defaults, errors, param
    groups, state (``step``, ``sum``, created in the constructor as torch does) and
    ``state_dict`` layout; checkpoints load into either. Every step updates all params of a
    (device, dtype) group in one native call.

    ``foreach`` and ``fused`` are accepted and change nothing (the step is always fused);
    ``differentiable=True`` raises NotImplementedError. Groups with sparse gradients take
    torch's single-tensor path. AMP: ``torch.amp.GradScaler`` unscales inside the update
    (``_step_supports_amp_scaling``); a step with inf/NaN gradients changes nothing.
    ``max_grad_norm`` (gradfuse extension, keyword-only): see :class:`MaxGradNormMixin`.
    ``master_weights``, ``state_dtype``, ``rounding``, ``kahan`` (keyword-only, off by default):
    see :class:`LowPrecisionMixin`.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adagrad.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not lr_decay >= 0.0:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not initial_accumulator_value >= 0.0:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        self._init_max_grad_norm(max_grad_norm)
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        check_fused_foreach(fused, foreach, differentiable)
        refuse_differentiable("Adagrad", differentiable)
        self._step_supports_amp_scaling = True
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group, initial_accumulator_value)

    def _init_state(self, p: Tensor, group: dict[str, Any], initial: float) -> None:
        state = self.state[p]
        state["step"] = (
            torch.zeros((), dtype=scalar_dtype(is_fused=group["fused"]), device=p.device)
            if group["fused"]
            else torch.tensor(0.0, dtype=scalar_dtype())
        )
        init_value = complex(initial, initial) if torch.is_complex(p) else initial
        state["sum"] = self._state_full(p, init_value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        fused = None
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            fused = group.setdefault("fused", None)
            for p in group["params"]:
                p_state = self.state.get(p, [])
                if len(p_state) != 0 and not torch.is_tensor(p_state["step"]):
                    step_val = float(p_state["step"])
                    p_state["step"] = (
                        torch.tensor(step_val, dtype=scalar_dtype(is_fused=fused), device=p.device)
                        if group["fused"]
                        else torch.tensor(step_val, dtype=scalar_dtype())
                    )
        state_values = list(self.state.values())
        step_is_tensor = (len(state_values) != 0) and torch.is_tensor(state_values[0]["step"])
        if not step_is_tensor:
            for s in state_values:
                s["step"] = torch.tensor(float(s["step"]), dtype=scalar_dtype(is_fused=fused))

    def share_memory(self) -> None:
        """Calls tensor.share_memory_() on the state sum tensors."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        def init(p: Tensor, state: dict[str, Any]) -> None:  # a param group added later
            self._init_state(p, group, self.defaults["initial_accumulator_value"])

        params, grads, state = self._gather_state(group, ("sum", "step"), init, sparse_error=None)
        if any(g.is_sparse for g in grads):
            if any(amp[k] is not None for k in ("clip_coef", "grad_scale", "found_inf")):
                raise RuntimeError(
                    "gradfuse.optim.Adagrad: sparse gradients cannot be combined with "
                    "max_grad_norm or GradScaler"
                )
            torch_adagrad(
                params,
                grads,
                state["sum"],
                state["step"],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                lr_decay=group["lr_decay"],
                eps=group["eps"],
                has_sparse_grad=True,
                foreach=False,
                maximize=group["maximize"],
                differentiable=False,
                fused=False,
            )
            return
        adagrad_(
            params,
            grads,
            state["sum"],
            state["step"],
            lr=group["lr"],
            lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            **amp,
            **self._low_precision_kwargs(params),
        )
