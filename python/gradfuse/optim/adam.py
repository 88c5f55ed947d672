"""gradfuse.optim.Adam: torch.optim.Adam with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import Optimizer, ParamsT

from gradfuse.functional._adam import adam_
from gradfuse.optim._base import (
    FusedStepMixin,
    LowPrecisionMixin,
    MaxGradNormMixin,
    check_adam_hparams,
    check_capturable,
    check_fused_foreach,
    refuse_differentiable,
    scalar_state,
    upgrade_scalar_state,
)


class Adam(FusedStepMixin, LowPrecisionMixin, MaxGradNormMixin, Optimizer):
    """Adam (and, with ``decoupled_weight_decay=True``, AdamW), fused.

    A drop-in for :class:`torch.optim.Adam`: the same arguments, defaults, errors, param
    groups, state (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) and
    ``state_dict`` layout (``step`` is a 0-dim float tensor on the CPU, or on the param's
    device with ``capturable``/``fused``); checkpoints load into either. Every step updates all
    params of a (device, dtype) group in one native call, with the per-element rule of torch's
    for-loop implementation.

    ``capturable=True`` keeps ``step`` and a tensor ``lr`` on the device and computes the bias
    corrections there (no host synchronisation), so ``step()`` can be captured in a CUDA graph;
    ``betas`` must then be floats. ``foreach`` and ``fused`` are accepted for compatibility and
    change nothing: the step is always fused. ``differentiable=True`` raises NotImplementedError. AMP: torch.amp.GradScaler
    unscales inside the update (``_step_supports_amp_scaling``).

    Low precision (gradfuse extension, keyword-only, off by default): ``master_weights``,
    ``state_dtype``, ``rounding`` and ``kahan``, see :class:`LowPrecisionMixin` (every gradfuse
    optimizer takes them).
    """

    _step_supports_amp_scaling = True
    _graph_capture_health_check = True

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        max_grad_norm: float | None = None,
        master_weights: bool = False,
        state_dtype: torch.dtype | None = None,
        rounding: str = "nearest",
        kahan: bool = False,
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adam.
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True"
                )
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        check_adam_hparams(lr, eps, betas, weight_decay)
        if not (
            (isinstance(betas[0], float) and isinstance(betas[1], float))
            or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))
        ):
            raise ValueError("betas must be either both floats or both Tensors")  # noqa: TRY004 (torch raises ValueError)
        for i in (0, 1):
            beta = betas[i]
            if isinstance(beta, Tensor):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{i}] as a Tensor is not supported for capturable=False and "
                        f"foreach=True"
                    )
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        # torch's _to_scalar: a 1-element tensor of any shape becomes 0-dim.
        betas = tuple(  # type: ignore[assignment]
            b.squeeze() if isinstance(b, Tensor) and b.dim() != 0 else b for b in betas
        )

        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)
        self._init_low_precision(master_weights, state_dtype, rounding, kahan)
        self._init_max_grad_norm(max_grad_norm)
        check_fused_foreach(fused, foreach, differentiable)
        refuse_differentiable(type(self).__name__, differentiable)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)
        upgrade_scalar_state(
            self, "step", lambda g: g["capturable"] or g["fused"], fused_key="fused"
        )

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        def init(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = scalar_state(
                0.0, p.device, group["capturable"] or group["fused"], fused=group["fused"]
            )
            state["exp_avg"] = self._state_zeros(p)
            state["exp_avg_sq"] = self._state_zeros(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = self._state_zeros(p)

        def check() -> None:
            if group["foreach"] and torch.is_tensor(group["lr"]) and not group["capturable"]:
                raise RuntimeError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True"
                )

        amsgrad = group["amsgrad"]
        params, grads, state = self._gather_state(
            group,
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")
            if amsgrad
            else ("exp_avg", "exp_avg_sq", "step"),
            init,
            sparse_error="Adam does not support sparse gradients, please consider SparseAdam instead",
            check=check,
        )
        check_capturable(group["capturable"], params, state["step"], what="params and state_steps")
        self._adam_family_update(
            adam_,
            group,
            amp,
            params,
            grads,
            [state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"] if amsgrad else None],
            steps=state["step"],
            amsgrad=amsgrad,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )
