"""torch.nn.functional's elementwise losses, with the gradient computed in the forward pass.

Each public function has torch's exact signature. The loss goes through one
``torch.autograd.Function``: its forward makes one native call that writes the loss and
dloss/dinput (into a buffer of its own, never over the input); its backward only multiplies
that saved gradient by ``grad_output`` (elementwise for ``reduction='none'``), so no host sync
and no second pass over the inputs. Double backward raises a clear error.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torch.nn import _reduction as _Reduction

from gradfuse.functional import _losses_elementwise as _ew
from gradfuse.nn._reduction import (
    autocast_device_type,
    autocast_float32,
    check_reduction,
    legacy_reduction,
)


class _ElementwiseLossFunction(torch.autograd.Function):
    """forward: loss and gradient from one native call; backward: a scaling (or nothing)."""

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None,
        pos_weight: Tensor | None,
        op: str,
        options: dict[str, Any],
    ) -> Tensor:
        r = _ew.compute(op, input, target, weight=weight, pos_weight=pos_weight, **options)
        # The inputs are saved only to recompute the gradient if backward runs a second time
        # (retain_graph=True) after the first one handed the buffer to autograd (see backward).
        ctx.save_for_backward(input, target)
        ctx.grad = r.grad
        ctx.extra = (weight, pos_weight, op, options)
        ctx.op = op
        ctx.input_shape = r.input_shape
        ctx.target_shape = r.target_shape
        ctx.input_dtype = input.dtype
        ctx.target_dtype = target.dtype
        loss: Tensor = r.loss
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            # create_graph=True: the saved gradient is a constant to autograd, so a second
            # derivative through it would be silently wrong. Refuse instead.
            raise RuntimeError(
                f"gradfuse.nn.functional.{ctx.op}: double backward (create_graph=True, "
                "gradgradcheck, Hessian-vector products) is not supported: the gradient is "
                "computed in the forward pass; use torch.nn.functional for second derivatives"
            )
        grad = ctx.grad
        if grad is None:  # a second backward through the same graph
            input, target = ctx.saved_tensors
            weight, pos_weight, op, options = ctx.extra
            grad = _ew.compute(
                op, input, target, weight=weight, pos_weight=pos_weight, **options
            ).grad
        grad_input = grad_target = None
        if ctx.needs_input_grad[1]:
            grad_target = _ew.sum_to_shape(-(grad * grad_output), ctx.target_shape)
            grad_target = grad_target.to(ctx.target_dtype)
        if ctx.needs_input_grad[0]:
            # On the CPU, reading a 0-dim grad_output costs no device sync; when it is exactly
            # 1 (loss.backward() on a mean or sum), the saved buffer is the answer: hand it over
            # (autograd may keep it as input.grad without a copy) instead of multiplying.
            if (
                grad_output.dim() == 0
                and grad_output.device.type == "cpu"
                and grad.dtype == ctx.input_dtype
                and tuple(grad.shape) == ctx.input_shape
                and bool(grad_output == 1)
            ):
                ctx.grad = None
                grad_input = grad
            else:
                grad_input = _ew.sum_to_shape(grad * grad_output, ctx.input_shape)
                grad_input = grad_input.to(ctx.input_dtype)
        return grad_input, grad_target, None, None, None, None


def _check_grads_implemented(
    fname: str, op: str, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None
) -> None:
    """Refuse, before anything runs, a gradient this loss does not compute."""
    if target.requires_grad and op not in _ew.TARGET_GRAD_IS_NEGATED:
        raise NotImplementedError(
            f"gradfuse.nn.functional.{fname}: the gradient with respect to target is not "
            f"implemented (target of shape {tuple(target.shape)}, dtype {target.dtype} requires "
            "grad); pass target.detach(), or use torch.nn.functional for this call"
        )
    for name, t in (("weight", weight), ("pos_weight", pos_weight)):
        if t is not None and t.requires_grad:
            raise NotImplementedError(
                f"gradfuse.nn.functional.{fname}: the gradient with respect to {name} is not "
                f"implemented ({name} of shape {tuple(t.shape)} requires grad); pass "
                f"{name}.detach(), or use torch.nn.functional for this call"
            )


def _autocasts(op: str, weighted: bool, device_type: str, options: dict[str, Any]) -> bool:
    """Whether torch computes this call under autocast's float32 policy (autocast is on).

    The aten losses are on its float32 list (huber's weight then multiplies a float32 loss).
    torch.nn.functional applies mse / l1's weight by plain tensor arithmetic instead, which
    autocast casts only where an op is on its list: none on the CPU (a 16-bit result, as
    without autocast); on CUDA, mse's pow and the 'sum' / 'mean' reductions' sum, which give a
    float32 result (weighted l1 with reduction='none' stays 16-bit)."""
    if not weighted or op not in ("mse_loss", "l1_loss"):
        return True
    if device_type != "cuda":
        return False
    return op == "mse_loss" or options.get("reduction") != "none"


def _apply(
    fname: str,
    op: str,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    **options: Any,
) -> Tensor:
    for name, t in (("input", input), ("target", target), ("weight", weight)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(f"{fname}(): argument '{name}' must be Tensor, not {type(t).__name__}")
    device_type = autocast_device_type(input)
    if device_type is not None and _autocasts(op, weight is not None, device_type, options):
        # torch.autocast runs these losses in float32 (its fp32 list): cast as it casts, so the
        # loss has torch's dtype and the input's gradient flows back through the cast.
        input = autocast_float32(input, device_type)
        target = autocast_float32(target, device_type)
        weight = autocast_float32(weight, device_type)
        pos_weight = autocast_float32(pos_weight, device_type)
    if torch.is_grad_enabled():  # without grad mode no gradient is asked for: nothing to refuse
        _check_grads_implemented(fname, op, target, weight, pos_weight)
        if input.requires_grad or target.requires_grad:
            out: Tensor = _ElementwiseLossFunction.apply(  # type: ignore[no-untyped-call]
                input, target, weight, pos_weight, op, options
            )
            return out
    r = _ew.compute(op, input, target, weight=weight, pos_weight=pos_weight, **options)
    return r.loss  # type: ignore[no-any-return]


def _warn_size(input: Tensor, target: Tensor) -> None:
    if target.size() != input.size():
        warnings.warn(
            f"Using a target size ({target.size()}) that is different to the input size "
            f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            stacklevel=3,
        )


def _reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """The loss's reduction (torch's legacy arguments mapped onto it), checked."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    check_reduction(reduction)
    return reduction


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """torch.nn.functional.mse_loss, fused (see the module docstring)."""
    _warn_size(input, target)
    reduction = _reduction(size_average, reduce, reduction)
    return _apply("mse_loss", "mse_loss", input, target, weight, reduction=reduction)


def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    """torch.nn.functional.l1_loss, fused."""
    _warn_size(input, target)
    reduction = _reduction(size_average, reduce, reduction)
    return _apply("l1_loss", "l1_loss", input, target, weight, reduction=reduction)


def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    """torch.nn.functional.smooth_l1_loss, fused (beta=0: the L1 loss, as in torch)."""
    _warn_size(input, target)
    reduction = _reduction(size_average, reduce, reduction)
    _ew.check_positive("smooth_l1_loss", "beta", beta, allow_zero=True)
    if beta == 0.0:
        return _apply("smooth_l1_loss", "l1_loss", input, target, reduction=reduction)
    return _apply(
        "smooth_l1_loss", "smooth_l1_loss", input, target, reduction=reduction, param=beta
    )


def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """torch.nn.functional.huber_loss, fused."""
    _warn_size(input, target)
    check_reduction(reduction)
    _ew.check_positive("huber_loss", "delta", delta, allow_zero=False)
    return _apply(
        "huber_loss", "huber_loss", input, target, weight, reduction=reduction, param=delta
    )


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """torch.nn.functional.binary_cross_entropy_with_logits, fused (log-sigmoid form)."""
    reduction = _reduction(size_average, reduce, reduction)
    return _apply(
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits",
        input,
        target,
        weight,
        pos_weight,
        reduction=reduction,
    )


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """torch.nn.functional.kl_div, fused ('batchmean' divides by input.size(0))."""
    if size_average is not None or reduce is not None:
        reduction = str(_Reduction.legacy_get_string(size_average, reduce))
    else:
        if reduction == "mean":
            warnings.warn(
                "reduction: 'mean' divides the total loss by both the batch size and the support "
                "size.'batchmean' divides only by the batch size, and aligns with the KL div math "
                "definition.'mean' will be changed to behave the same as 'batchmean' in the next "
                "major release.",
                stacklevel=2,
            )
        if reduction != "batchmean":
            check_reduction(reduction)
    return _apply("kl_div", "kl_div", input, target, reduction=reduction, log_target=log_target)


class MSELoss(torch.nn.MSELoss):
    """torch.nn.MSELoss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    """torch.nn.L1Loss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    """torch.nn.SmoothL1Loss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(torch.nn.HuberLoss):
    """torch.nn.HuberLoss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class KLDivLoss(torch.nn.KLDivLoss):
    """torch.nn.KLDivLoss with the fused loss + gradient."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


__all__ = [
    "BCEWithLogitsLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "SmoothL1Loss",
    "binary_cross_entropy_with_logits",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "smooth_l1_loss",
]
