"""gradfuse.optim.SGD: torch.optim.SGD with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

from torch import Tensor
from torch.optim import sgd as torch_sgd
from torch.optim.optimizer import ParamsT

from gradfuse.functional._steps import found_inf_is_set
from gradfuse.functional._updates import SGD as SGD_SPEC
from gradfuse.functional._updates import sgd_
from gradfuse.optim._optimizer import FusedOptimizer, Gathered, OptimizerOptions, group_values
from gradfuse.optim._torch_compat import check_nonnegative, torch_defaults


class SGD(FusedOptimizer):
    """Stochastic gradient descent (optionally with momentum), fused.

    A drop-in for :class:`torch.optim.SGD`: the same arguments, defaults, errors, param groups,
    state (``momentum_buffer``) and ``state_dict`` layout; checkpoints load into either. Every
    step updates all params of a (device, dtype) group in one native call.

    ``foreach`` and ``fused`` are accepted for compatibility and change nothing: the step is
    always fused. ``differentiable=True`` raises NotImplementedError. Groups with sparse
    gradients take torch's own single-tensor path, which is what torch supports for them.
    AMP: torch.amp.GradScaler unscales inside the update (``_step_supports_amp_scaling``).
    ``max_grad_norm``, ``master_weights``, ``state_dtype``, ``rounding``, ``kahan`` (gradfuse
    extensions, keyword-only, off by default): see :class:`~gradfuse.optim.FusedOptimizer`.
    """

    _update_fn = staticmethod(sgd_)
    _spec = SGD_SPEC
    _setstate_keys = ("nesterov", "maximize", "foreach", "differentiable")
    _setstate_defaults: ClassVar[dict[str, Any]] = {"fused": False}  # torch's, not the default

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
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.SGD.
        check_nonnegative(True, lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, torch_defaults(locals()), **options)

    def _sparse_step(self, group: dict[str, Any], amp: dict[str, Any], gathered: Gathered) -> None:
        """torch's single-tensor SGD, the path torch itself offers for sparse gradients; AMP's
        unscale and skip are done here, as GradScaler would have done them."""
        params, grads, lists = gathered
        if amp["clip_coef"] is not None:
            raise RuntimeError(
                "gradfuse.optim.SGD: max_grad_norm does not support sparse gradients"
            )
        if found_inf_is_set(amp["found_inf"]):
            return
        if amp["grad_scale"] is not None:
            inv_scale = amp["grad_scale"].double().reciprocal().float()
            grads = [g * inv_scale.to(g.device) for g in grads]
        buffers = lists.get("momentum_buffers", [])
        torch_sgd.sgd(
            params,
            grads,
            buffers,
            **group_values(
                group, "weight_decay", "momentum", "lr", "dampening", "nesterov", "maximize"
            ),
            has_sparse_grad=True,
            foreach=False,
            fused=False,
        )
        for p, buf in zip(params, buffers, strict=False):  # no buffers without momentum
            if buf is not None:
                self.state[p]["momentum_buffer"] = buf
