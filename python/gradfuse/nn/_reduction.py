"""Argument handling shared by gradfuse.nn's losses: torch's ``reduction`` argument, and the
dtypes torch.autocast gives the losses."""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor
from torch.nn import _reduction as _Reduction


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """``reduction`` as torch's losses take it: when the deprecated ``size_average`` or
    ``reduce`` is given, they decide it (torch's mapping, and its deprecation warning)."""
    if size_average is not None or reduce is not None:
        return str(_Reduction.legacy_get_string(size_average, reduce))
    return reduction


def check_reduction(reduction: str) -> None:
    """torch's error for an unknown reduction."""
    _Reduction.get_enum(reduction)


# Device types whose autocast gradfuse's kernels can meet (other devices fall back to torch,
# or are refused, before any kernel runs).
_AUTOCAST_DEVICE_TYPES = ("cpu", "cuda")


def autocast_device_type(input: Tensor) -> str | None:
    """The device type whose torch.autocast region ``input`` is computed in, or None outside
    one.

    Every loss in gradfuse.nn is on autocast's float32 list on the CPU and on CUDA (aten's
    autocast_mode.cpp: mse_loss, l1_loss, smooth_l1_loss, huber_loss,
    binary_cross_entropy_with_logits, kl_div, nll_loss, and cross_entropy_loss on the CPU; on
    CUDA cross_entropy decomposes into log_softmax, kept in the logits' dtype, and nll_loss,
    whose result is float32): torch returns a float32 loss. A 16-bit loss would also round the
    upstream gradient to 16 bits, which GradScaler's scale (65536) overflows in float16.
    gradfuse casts the operands to float32 on both devices (on the CPU so does torch); on CUDA
    that makes cross_entropy hold a float32 copy of the logits and a float32 gradient, where
    torch holds 16-bit log-probabilities (values: gradfuse's are the float32 ones). A float32
    loss written by the kernel from the 16-bit logits would avoid the copy (not done yet).
    """
    device_type = input.device.type
    if device_type in _AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type):
        return device_type
    return None


@overload
def autocast_float32(t: Tensor, device_type: str) -> Tensor: ...
@overload
def autocast_float32(t: Tensor | None, device_type: str) -> Tensor | None: ...
def autocast_float32(t: Tensor | None, device_type: str) -> Tensor | None:
    """``t`` as autocast's float32 policy hands it to the op (aten's cached_cast / is_eligible):
    a floating-point tensor on the autocast device type, other than float64, cast to float32;
    anything else (float64, integer targets, another device, an absent optional ``None``) as it
    is. The cast is differentiable: ``t``'s gradient comes back in its own dtype."""
    if t is None:
        return None
    if t.is_floating_point() and t.dtype != torch.float64 and t.device.type == device_type:
        return t.to(torch.float32)
    return t
