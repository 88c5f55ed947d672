"""cross_entropy / nll_loss as differentiable torch functions and modules.

The forward of each autograd Function is one native call that computes the loss and
dloss/dinput together (gradfuse.functional); the backward only scales that saved gradient by
``grad_output``, with no host synchronisation on CUDA. On the CPU a scalar ``grad_output``
of exactly 1 (the usual ``loss.backward()``) is read directly and the saved gradient is handed
over as is, without another pass over it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from gradfuse._config import cuda_compiled
from gradfuse.functional._losses_softmax import (
    check_label_smoothing,
    cross_entropy_with_grad,
    nll_loss_with_grad,
)
from gradfuse.nn._reduction import autocast_device_type, autocast_float32, legacy_reduction

_NATIVE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _native_reason(input: Tensor) -> str | None:
    """Why the native kernels cannot serve ``input`` (None when they can)."""
    if input.device.type not in ("cpu", "cuda"):
        return f"device {input.device} (gradfuse kernels run on cpu and cuda)"
    if input.device.type == "cuda" and not cuda_compiled():
        return "a CUDA tensor, but this gradfuse was built without CUDA"
    if input.dtype not in _NATIVE_DTYPES:
        return f"dtype {input.dtype} (supported: float32, float64, float16, bfloat16)"
    if input.layout != torch.strided:
        return f"layout {input.layout}"
    return None


_warned: set[str] = set()


def _fallback_warning(op: str, reason: str) -> None:
    key = f"{op}:{reason}"
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"gradfuse.nn.functional.{op}: falling back to torch for {reason}",
            stacklevel=3,
        )


def _check_tensors(aten_name: str, input: Any, target: Any, weight: Any) -> None:
    """torch's error for an argument that is not a tensor (its aten function's signature)."""
    for pos, (name, t) in enumerate((("input", input), ("target", target), ("weight", weight))):
        if not (isinstance(t, Tensor) or (name == "weight" and t is None)):
            raise TypeError(
                f"{aten_name}(): argument '{name}' (position {pos + 1}) must be Tensor, not "
                f"{type(t).__name__}"
            )


def _operands(
    aten_name: str, input: Any, target: Any, weight: Any
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The operands checked as torch checks them and cast as torch.autocast casts them:
    cross_entropy and nll_loss are on its float32 list (see autocast_device_type), which casts
    every eligible floating-point operand (a class-index target is not one)."""
    _check_tensors(aten_name, input, target, weight)
    device_type = autocast_device_type(input)
    if device_type is not None:
        input = autocast_float32(input, device_type)
        target = autocast_float32(target, device_type)
        weight = autocast_float32(weight, device_type)
    return input, target, weight


def _class_dim(input: Tensor) -> int:
    return 0 if input.dim() == 1 else 1


def _scale_grad(ctx: Any, grad: Tensor, grad_output: Tensor, target: Tensor) -> Tensor:
    """``grad * grad_output`` (per row for reduction='none'), reusing ``grad``'s memory.

    A row whose class target is ``ignore_index`` has no gradient in torch whatever
    ``grad_output`` is (nll_loss's backward writes nothing there): its saved zeros must not turn
    into NaN under an infinite or NaN ``grad_output``, as they would in a plain product
    (transformers' ForCausalLMLoss divides an all-ignored batch's summed loss by
    num_items_in_batch = 0: grad_output is inf). A finite scalar keeps zeros zero: there the
    plain product serves."""
    if grad_output.device.type == "cpu":
        # Reading CPU values is no synchronisation: decide on them here.
        if ctx.reduction != "none":
            g = float(grad_output)
            if g == 1.0:
                return grad  # skip a full pass
            if math.isfinite(g):
                return grad.mul_(grad_output)
        elif bool(torch.isfinite(grad_output).all()):
            go = grad_output if ctx.class_dim == 0 else grad_output.unsqueeze(1)
            return grad.mul_(go)  # finite factors keep the ignored rows' zeros zero
    go = grad_output
    if not ctx.prob_target:
        # A factor per row, 0 on the ignored rows; no host sync (CUDA, or a per-row or
        # non-finite grad_output). Targets compare as int64 (uint8 ones would not equal -100).
        index = target if target.dtype == torch.int64 else target.to(torch.int64)
        ignored = index == ctx.args[0]
        go = torch.where(ignored, 0.0, go)  # a per-row factor (a scalar's broadcast)
    if ctx.class_dim == 1 and go.dim() > 0:
        go = go.unsqueeze(1)
    return grad.mul_(go)


def _refuse_double_backward(op: str) -> None:
    # Grad mode is on inside backward only under create_graph=True: the saved gradient is a
    # constant, so a graph built from it would silently give wrong second derivatives.
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"gradfuse.nn.functional.{op}: double backward (create_graph=True) is not "
            f"supported: the fused kernel gives first derivatives only; use "
            f"torch.nn.functional.{op} where second derivatives are needed"
        )


def _take_grad(ctx: Any, recompute: Any) -> Tensor:
    """The saved gradient the first time; recomputed when backward runs again
    (retain_graph=True), because the first backward hands its memory to autograd."""
    grad = ctx.grad
    if grad is not None:
        ctx.grad = None
        return grad  # type: ignore[no-any-return]
    return recompute()  # type: ignore[no-any-return]


class _SoftmaxLossFunction(torch.autograd.Function):
    """cross_entropy and nll_loss: forward, the loss and its input gradient from one native call
    (``_WITH_GRAD[name]``, ``args`` its arguments after the weight); backward, a scaling of that
    gradient (recomputed if it was not kept) and, for probability targets, their gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        target: Tensor,
        weight: Tensor | None,
        name: str,
        args: tuple[Any, ...],
    ) -> Tensor:
        loss, grad = _WITH_GRAD[name](
            input, target, weight, *args, compute_grad=bool(ctx.needs_input_grad[0])
        )
        ctx.grad = grad
        ctx.name = name
        ctx.reduction = args[1]
        ctx.class_dim = _class_dim(input)
        ctx.prob_target = name == "cross_entropy" and target.shape == input.shape
        ctx.args = args
        ctx.save_for_backward(input, target, weight)
        return loss  # type: ignore[no-any-return]

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        name = ctx.name
        _refuse_double_backward(name)
        input, target, weight = ctx.saved_tensors
        if ctx.needs_input_grad[2]:
            raise RuntimeError(
                f"gradfuse.nn.functional.{name}: the derivative for 'weight' is not "
                f"implemented (use torch.nn.functional.{name} for it)"
            )
        grad_input = None
        if ctx.needs_input_grad[0]:
            grad = _take_grad(ctx, lambda: _WITH_GRAD[name](input, target, weight, *ctx.args)[1])
            grad_input = _scale_grad(ctx, grad, grad_output, target)
        grad_target = None
        if ctx.needs_input_grad[1]:  # cross_entropy's probability targets
            grad_target = _prob_target_grad(ctx, input, target, weight, grad_output)
        return grad_input, grad_target, None, None, None


_WITH_GRAD = {"cross_entropy": cross_entropy_with_grad, "nll_loss": nll_loss_with_grad}


def _prob_target_grad(
    ctx: Any, input: Tensor, target: Tensor, weight: Tensor | None, grad_output: Tensor
) -> Tensor:
    """dloss/dtarget_c = -(1 - eps) w_c log p_c, times the reduction's scale and grad_output
    ([note: softmax loss derivation] in gradfuse/math/losses_softmax.h, step 2)."""
    _, reduction, label_smoothing = ctx.args
    cd = ctx.class_dim
    logp = torch.log_softmax(input.detach(), dim=cd)
    g = logp * (-(1.0 - label_smoothing))
    if weight is not None:
        shape = [1] * input.dim()
        shape[cd] = weight.numel()
        g = g * weight.view(shape)
    if reduction == "none":
        g = g * (grad_output if cd == 0 else grad_output.unsqueeze(1))
    else:
        if reduction == "mean":
            g = g / max(input.numel() // max(input.shape[cd], 1), 1)
        g = g * grad_output
    out: Tensor = g.to(target.dtype)
    return out


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Drop-in for :func:`torch.nn.functional.cross_entropy` (same signature and results);
    the loss and its input gradient come from one fused native pass."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    input, target, weight = _operands("cross_entropy_loss", input, target, weight)
    reason = _native_reason(input)
    if reason is not None:
        _fallback_warning("cross_entropy", reason)
        return torch.nn.functional.cross_entropy(
            input,
            target,
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
    label_smoothing = check_label_smoothing(label_smoothing)
    if target.shape == input.shape and target.is_floating_point():
        # Probability targets: torch computes -(log_softmax(input) * target * weight), which
        # promotes all three (a float64 or integer weight too); so does this path (the casts
        # are differentiable: each gradient comes back in its tensor's dtype).
        common = torch.promote_types(input.dtype, target.dtype)
        if weight is not None:
            common = torch.promote_types(common, weight.dtype)
        input, target = input.to(common), target.to(common)
        if weight is not None:
            weight = weight.to(common)
    if not torch.is_grad_enabled() or not (
        input.requires_grad or (target.requires_grad and target.is_floating_point())
    ):
        # Evaluation: the loss alone, one read of the logits, no gradient buffer.
        loss: Tensor = cross_entropy_with_grad(
            input,
            target,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            compute_grad=False,
        )[0]
        return loss
    out: Tensor = _SoftmaxLossFunction.apply(  # type: ignore[no-untyped-call]
        input,
        target,
        weight,
        "cross_entropy",
        (ignore_index, reduction, label_smoothing),
    )
    return out


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Drop-in for :func:`torch.nn.functional.nll_loss` (same signature and results); the loss
    and its input gradient come from one fused native pass."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    input, target, weight = _operands("nll_loss_nd", input, target, weight)
    reason = _native_reason(input)
    if reason is not None:
        _fallback_warning("nll_loss", reason)
        return torch.nn.functional.nll_loss(
            input, target, weight, ignore_index=ignore_index, reduction=reduction
        )
    if not torch.is_grad_enabled() or not input.requires_grad:
        loss: Tensor = nll_loss_with_grad(
            input, target, weight, ignore_index, reduction, compute_grad=False
        )[0]
        return loss
    out: Tensor = _SoftmaxLossFunction.apply(  # type: ignore[no-untyped-call]
        input, target, weight, "nll_loss", (ignore_index, reduction)
    )
    return out


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """Drop-in for :class:`torch.nn.CrossEntropyLoss` (it is one: same constructor, buffers,
    state_dict and repr); ``forward`` uses :func:`gradfuse.nn.functional.cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class NLLLoss(torch.nn.NLLLoss):
    """Drop-in for :class:`torch.nn.NLLLoss` (it is one); ``forward`` uses
    :func:`gradfuse.nn.functional.nll_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
