"""gradfuse.optim.AdamW: torch.optim.AdamW with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any, Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.optim._optimizer import OptimizerOptions
from gradfuse.optim._torch_compat import torch_defaults
from gradfuse.optim.adam import Adam


class AdamW(Adam):
    """AdamW (decoupled weight decay), fused: a drop-in for :class:`torch.optim.AdamW`.

    As in torch, AdamW is :class:`Adam` with ``decoupled_weight_decay=True`` and a default
    ``weight_decay`` of 1e-2; see :class:`gradfuse.optim.Adam` for what is shared.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        super().__init__(params, **torch_defaults(locals()), decoupled_weight_decay=True, **options)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
