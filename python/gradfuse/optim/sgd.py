"""gradfuse.optim.SGD: torch.optim.SGD with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import sgd as torch_sgd
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._optim import sgd_
from gradfuse.functional._steps import found_inf_is_set
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    check_fused_foreach,
    params_with_grad,
    refuse_differentiable,
)


class SGD(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """Stochastic gradient descent (optionally with momentum), fused.

    A drop-in for :class:`torch.optim.SGD`: the same arguments, defaults, errors, param groups,
    state (``momentum_buffer``) and ``state_dict`` layout; checkpoints load into either. Every
    step updates all params of a (device, dtype) group in one native call.

    ``foreach`` and ``fused`` are accepted for compatibility and change nothing: the step is
    always fused. ``differentiable=True`` raises NotImplementedError. Groups with sparse
    gradients take torch's own single-tensor path, which is what torch supports for them.
    AMP: torch.amp.GradScaler unscales inside the update (``_step_supports_amp_scaling``).
    ``max_grad_norm`` (gradfuse extension, keyword-only): see :class:`MaxGradNormMixin`.
    ``master_weights``, ``state_dtype``, ``rounding``, ``kahan`` (keyword-only, off by default):
    see :class:`LowPrecisionMixin`.
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
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
        # Same checks, same order, same messages as torch.optim.SGD.
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        check_fused_foreach(fused, foreach, differentiable)
        refuse_differentiable("SGD", differentiable)
        self._init_max_grad_norm(max_grad_norm)
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        params, grads, sparse = params_with_grad(group)
        momentum = group["momentum"]
        if self.master_weights or self.kahan or self.state_dtype is not None:
            for p in params:
                self._low_precision_state(p, self.state[p])
        state = self.state
        buffers: list[Tensor | None] = (
            [state[p].get("momentum_buffer") for p in params] if momentum != 0 else []
        )
        missing = [i for i, buf in enumerate(buffers) if buf is None]
        if sparse:
            if amp["clip_coef"] is not None:
                raise RuntimeError(
                    "gradfuse.optim.SGD: max_grad_norm does not support sparse gradients"
                )
            # torch's single-tensor SGD is the path torch itself offers for sparse grads;
            # AMP's unscale and skip are done here, as GradScaler would have done them.
            if found_inf_is_set(amp["found_inf"]):
                return
            if amp["grad_scale"] is not None:
                inv_scale = amp["grad_scale"].double().reciprocal().float()
                grads = [g * inv_scale.to(g.device) for g in grads]
            torch_sgd.sgd(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=momentum,
                lr=group["lr"],
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                has_sparse_grad=True,
                foreach=False,
                fused=False,
            )
        else:
            sgd_(
                params,
                grads,
                buffers if momentum != 0 else None,
                lr=group["lr"],
                momentum=momentum,
                dampening=group["dampening"],
                weight_decay=group["weight_decay"],
                nesterov=group["nesterov"],
                maximize=group["maximize"],
                **amp,
                state_dtype=self.state_dtype,
                **self._low_precision_kwargs(params),
            )
        for i in missing:  # the buffers this step created (first step, or a param added later)
            buf = buffers[i]
            if buf is not None:  # None: an AMP-skipped first step created nothing
                state[params[i]]["momentum_buffer"] = buf
