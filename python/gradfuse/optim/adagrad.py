"""gradfuse.optim.Adagrad: torch.optim.Adagrad with a fused multi-tensor step."""

from __future__ import annotations

from typing import Any, Unpack

from torch import Tensor
from torch.optim.adagrad import adagrad as torch_adagrad
from torch.optim.optimizer import ParamsT

from gradfuse.functional._updates import ADAGRAD, adagrad_
from gradfuse.optim._optimizer import FusedOptimizer, Gathered, OptimizerOptions, group_values
from gradfuse.optim._torch_compat import check_nonnegative, scalar_state, torch_defaults


class Adagrad(FusedOptimizer):
    """Adagrad, fused.

    A drop-in for :class:`torch.optim.Adagrad`: the same arguments, defaults, errors, param
    groups, state (``step``, ``sum``, created in the constructor as torch does) and
    ``state_dict`` layout; checkpoints load into either. Every step updates all params of a
    (device, dtype) group in one native call.

    ``foreach`` and ``fused`` are accepted and change nothing (the step is always fused);
    ``differentiable=True`` raises NotImplementedError. Groups with sparse gradients take
    torch's single-tensor path. AMP: ``torch.amp.GradScaler`` unscales inside the update
    (``_step_supports_amp_scaling``); a step with inf/NaN gradients changes nothing.
    ``max_grad_norm``, ``master_weights``, ``state_dtype``, ``rounding``, ``kahan`` (gradfuse
    extensions, keyword-only, off by default): see :class:`~gradfuse.optim.FusedOptimizer`.
    """

    _update_fn = staticmethod(adagrad_)
    _spec = ADAGRAD
    _setstate_keys = ("foreach", "maximize", "differentiable", "fused")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Adagrad.
        check_nonnegative(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        super().__init__(params, torch_defaults(locals()), **options)
        for group in self.param_groups:  # torch creates Adagrad's state in the constructor
            for p in group["params"]:
                self._init_state(p, group, self.state[p])

    def _counters_on_device(self, group: dict[str, Any]) -> bool:
        return bool(group["fused"])

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = scalar_state(0.0, p.device, bool(group["fused"]), fused=group["fused"])
        initial = self.defaults["initial_accumulator_value"]
        state["sum"] = self._precision.full(
            p, complex(initial, initial) if p.is_complex() else initial
        )

    def share_memory(self) -> None:
        """Calls tensor.share_memory_() on the state sum tensors."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    def _sparse_step(self, group: dict[str, Any], amp: dict[str, Any], gathered: Gathered) -> None:
        """torch's single-tensor Adagrad, the path torch offers for sparse gradients."""
        if any(amp[k] is not None for k in ("clip_coef", "grad_scale", "found_inf")):
            raise RuntimeError(
                "gradfuse.optim.Adagrad: sparse gradients cannot be combined with "
                "max_grad_norm or GradScaler"
            )
        params, grads, lists = gathered
        torch_adagrad(
            params,
            grads,
            lists["state_sums"],
            lists["state_steps"],
            **group_values(group, "lr", "weight_decay", "lr_decay", "eps", "maximize"),
            has_sparse_grad=True,
            foreach=False,
            differentiable=False,
            fused=False,
        )
