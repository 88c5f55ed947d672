"""What every gradfuse optimizer shares: torch.optim.Optimizer semantics around a fused step.

Subclasses keep torch's constructor signature, defaults, validation messages, state names and
``state_dict`` layout, so a checkpoint moves between torch and gradfuse in both directions; their
``step`` collects each param group's tensors and hands them to one function of
:mod:`gradfuse.functional`, which groups them by (device, dtype) into native calls.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def refuse_differentiable(name: str, differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            f"gradfuse.optim.{name}: differentiable=True is not supported; the fused update "
            f"runs outside autograd. Use torch.optim.{name}(..., differentiable=True) to "
            f"differentiate through the optimizer step."
        )


def params_with_grad(group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], bool]:
    """The params of a group that have a gradient, their gradients, and whether any is sparse."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    sparse = False
    for p in group["params"]:
        if p.grad is None:
            continue
        params.append(p)
        grads.append(p.grad)
        sparse = sparse or p.grad.is_sparse
    return params, grads, sparse


def check_fused_foreach(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    """The errors torch raises for contradictory fused/foreach/differentiable flags."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
