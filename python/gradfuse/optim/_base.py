"""What every gradfuse optimizer shares: torch.optim.Optimizer semantics around a fused step.

Subclasses keep torch's constructor signature, defaults, validation messages, state names and
``state_dict`` layout, so a checkpoint moves between torch and gradfuse in both directions; their
``step`` collects each param group's tensors and hands them to one function of
:mod:`gradfuse.functional`, which groups them by (device, dtype) into native calls.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor


def scalar_dtype(is_fused: bool | None = None) -> Any:
    """torch's dtype for ``step`` counters (torch.optim.optimizer._get_scalar_dtype)."""
    from torch.optim.optimizer import _get_scalar_dtype

    return _get_scalar_dtype(is_fused)  # type: ignore[no-untyped-call]


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


class MaxGradNormMixin:
    """The keyword-only ``max_grad_norm`` extension, shared by every gradfuse optimizer.

    With ``max_grad_norm`` set, each step first computes the global 2-norm of all the
    optimizer's gradients in one fused pass (of the unscaled gradients under AMP), then passes
    ``clip_coef = min(max_grad_norm / (norm + 1e-6), 1)`` to the update, which multiplies each
    gradient by it as it reads it: no pass rewrites the gradients, and on CUDA the coefficient
    stays on the device (no host synchronisation). The result equals
    ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` followed by the step, except that
    ``p.grad`` is left unclipped.

    The setting is an attribute of the optimizer, not a param-group option, so ``state_dict()``
    keeps torch's layout exactly and loads into the torch class of the same name; it survives
    pickling (``__getstate__``) but not ``state_dict()`` (pass it to the constructor again).

    Use: call ``_init_max_grad_norm`` in ``__init__`` and pass ``clip_coef=self._clip_coef()``
    to the functional update of every group.
    """

    max_grad_norm: float | None

    def _init_max_grad_norm(self, max_grad_norm: float | None) -> None:
        if max_grad_norm is not None:
            value = float(max_grad_norm)
            if not value >= 0.0:
                raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm}")
            max_grad_norm = value
        self.max_grad_norm = max_grad_norm

    def _clip_coef(self, grad_scale: Tensor | None = None) -> Tensor | None:
        """The clipping coefficient for this step (1-element float32 tensor), or None.

        ``grad_scale``: GradScaler's scale when the gradients arrive scaled (in-kernel AMP
        unscaling); the norm is then of the unscaled gradients.
        """
        if self.max_grad_norm is None:
            return None
        import torch

        from gradfuse import _clip

        param_groups: list[dict[str, Any]] = self.param_groups  # type: ignore[attr-defined]
        grads = [p.grad for g in param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = _clip.total_norm("max_grad_norm", grads, 2.0)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device, norm.dtype).reshape(())
        coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
        return coef.to(torch.float32).reshape(1)

    def __getstate__(self) -> dict[str, Any]:
        state = cast("dict[str, Any]", super().__getstate__())
        state["max_grad_norm"] = getattr(self, "max_grad_norm", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("max_grad_norm", None)


def amp_scaling(optimizer: object) -> tuple[Tensor | None, Tensor | None]:
    """GradScaler's ``grad_scale`` and ``found_inf`` for this step, when it set them (it does so
    on optimizers with ``_step_supports_amp_scaling``), else (None, None)."""
    return getattr(optimizer, "grad_scale", None), getattr(optimizer, "found_inf", None)
