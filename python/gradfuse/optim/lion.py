"""gradfuse.optim.Lion: the Lion optimizer (Chen et al. 2023), fused."""

from __future__ import annotations

from typing import Unpack

from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import LION, lion_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class Lion(FusedOptimizer):
    """Lion ("Symbolic Discovery of Optimization Algorithms", Chen et al. 2023), fused.

    Per step, with ``m`` the state ``exp_avg`` (zeros at first)::

        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * weight_decay) - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g

    Torch has no Lion; the arguments follow torch's conventions (``betas`` as a pair,
    ``weight_decay`` decoupled as in the paper, ``maximize`` keyword-only; ``foreach``,
    ``fused`` accepted, ``differentiable=True`` raises NotImplementedError). The paper suggests
    a learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger. AMP,
    ``max_grad_norm`` and the precision options as for every gradfuse optimizer (see
    :class:`~gradfuse.optim.FusedOptimizer`).
    """

    _update_fn = staticmethod(lion_)
    _spec = LION
    _sparse_error = "Lion does not support sparse gradients"
    _setstate_keys = ("maximize", "foreach", "differentiable", "fused")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        check_nonnegative(lr=lr, betas=betas, weight_decay=weight_decay)
        super().__init__(params, torch_defaults(locals()), **options)
