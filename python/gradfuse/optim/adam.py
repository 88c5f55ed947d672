"""gradfuse.optim.Adam: torch.optim.Adam with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any, Unpack

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import ADAM, adam_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class Adam(FusedOptimizer):
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
    ``state_dtype``, ``rounding`` and ``kahan``, see :mod:`gradfuse.optim._precision` (every gradfuse
    optimizer takes them), and ``max_grad_norm`` (:class:`~gradfuse.optim.FusedOptimizer`).
    """

    _update_fn = staticmethod(adam_)
    _spec = ADAM
    _sparse_error = "Adam does not support sparse gradients, please consider SparseAdam instead"
    _graph_capture_health_check = True
    # The param-group keys that older checkpoints of torch's Adam family may lack.
    _setstate_keys = (
        "amsgrad",
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
        "decoupled_weight_decay",
        "fused",
    )

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
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adam.
        if isinstance(lr, Tensor) and foreach and not capturable:
            raise ValueError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        check_nonnegative(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        betas = _checked_betas(betas, capturable, foreach)
        super().__init__(params, torch_defaults(locals()), **options)

    def _counters_on_device(self, group: dict[str, Any]) -> bool:
        return bool(group["capturable"] or group["fused"])

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        if (
            group["foreach"]
            and torch.is_tensor(group["lr"])
            and not group["capturable"]
            and any(p.grad is not None for p in group["params"])
        ):
            raise RuntimeError(
                "lr as a Tensor is not supported for capturable=False and foreach=True"
            )
        super()._update(group, amp)


def _checked_betas(
    betas: tuple[float | Tensor, float | Tensor], capturable: bool, foreach: bool | None
) -> tuple[float | Tensor, float | Tensor]:
    """torch.optim.Adam's checks of tensor betas (same order, same messages), then torch's
    ``_to_scalar``: a 1-element tensor of any shape becomes 0-dim."""
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
                    f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True"
                )
            if beta.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
    squeezed = [b.squeeze() if isinstance(b, Tensor) and b.dim() != 0 else b for b in betas]
    return squeezed[0], squeezed[1]
