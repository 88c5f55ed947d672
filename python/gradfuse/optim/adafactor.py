"""gradfuse.optim.Adafactor: a fused drop-in for torch.optim.Adafactor."""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._reducing import ADAFACTOR, adafactor_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions, group_values
from gradfuse.optim._torch_compat import check_lr, scalar_state, torch_defaults


class Adafactor(FusedOptimizer):
    """Adafactor ("Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", Shazeer &
    Stern 2018) as ``torch.optim.Adafactor`` implements it: same signature, defaults, checks
    and messages, state (``step``; ``row_var`` and ``col_var`` for params of rank >= 2,
    factored over the last two dims; ``variance`` for the others) and results, in a few fused
    passes per step instead of torch's for-loop or foreach chain.

    Per step ``t`` and param (see :func:`gradfuse.functional.adafactor_`)::

        alpha = max(eps2, RMS(p)) * min(lr, 1 / sqrt(t))
        p = p * (1 - lr * weight_decay)
        v = row_var @ col_var / max(mean(row_var), eps1)   (factored; the row and column
            means of g^2 averaged into row_var/col_var with weight t^beta2_decay), or the
            averaged g^2 itself (variance)
        u = g / sqrt(max(v, eps1^2))
        p = p - alpha / max(1, RMS(u) / d) * u

    Differences from torch: params of rank >= 2 must be contiguous; an empty param only
    advances its step (torch raises ZeroDivisionError); ``foreach`` is accepted and changes
    nothing. gradfuse extensions (keyword-only): ``max_grad_norm`` (clipping inside the step,
    see :class:`~gradfuse.optim.FusedOptimizer`), AMP support (GradScaler's scale and inf
    check are applied inside the step; torch's Adafactor leaves both to the GradScaler) and the
    precision policies (:mod:`gradfuse.optim._precision`): ``master_weights`` (the update, RMS(p)
    included, runs on the float32 copy; with ``eps=(None, ...)`` eps1 is then float32's machine
    epsilon, the dtype the update runs in, where torch takes the param's), ``kahan``,
    ``rounding="stochastic"`` and ``state_dtype`` for ``row_var``/``col_var``/``variance``
    (bfloat16 for float32 params, float32 for 16-bit ones). No 8-bit state
    (``state_dtype=torch.uint8`` is refused): the factored state is already O(rows + cols) per
    matrix and only vectors keep a full ``variance``. CUDA tensors run a CUDA kernel (compiled,
    not yet run on a GPU) with the same storage policies.
    """

    _update_fn = staticmethod(adafactor_)
    _spec = ADAFACTOR
    _sparse_error = "Adafactor does not support sparse gradients"
    _setstate_defaults: ClassVar[dict[str, Any]] = {"foreach": None, "maximize": False}
    _no_8bit = (
        "Adafactor's factored state is already O(rows + cols) per matrix, and only vectors keep "
        "a full variance (a small share of the memory): 8-bit codes would save almost nothing"
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        check_lr(lr)
        if not beta2_decay <= 0.0:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not eps[0] >= 0.0:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not eps[1] >= 0.0:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not d >= 1.0:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")
        super().__init__(params, torch_defaults(locals()), **options)

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """torch's first-step state: ``step``, then row/col factors or the full variance."""
        state["step"] = scalar_state(0.0, p.device, False)
        grad = p.grad
        assert grad is not None
        dtype = self._precision.dtype_for(p)  # the state dtype (the param's by default)
        if grad.dim() > 1:
            row_shape = list(grad.shape)
            row_shape[-1] = 1
            state["row_var"] = grad.new_zeros(row_shape, dtype=dtype)
            col_shape = list(grad.shape)
            col_shape[-2] = 1
            state["col_var"] = grad.new_zeros(col_shape, dtype=dtype)
        else:
            state["variance"] = torch.zeros_like(
                grad, dtype=dtype, memory_format=torch.preserve_format
            )

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        for p in group["params"]:
            if p.grad is not None and torch.is_complex(p):
                raise RuntimeError("Adafactor does not support complex parameters")
        params, grads, lists = self._gather(group)
        precision = self._precision
        if precision.state_dtype is not None:
            # The policy casts the state shaped like the param (variance); row_var/col_var of
            # a torch checkpoint are cast here.
            self._cast_factored(params, lists)
        lowprec = precision.kwargs(type(self).__name__, self.state, params)
        eps1, eps2 = group["eps"]
        adafactor_(
            params,
            grads,
            lists["row_vars"],
            lists["col_vars"],
            lists["variances"],
            lists["state_steps"],
            **group_values(group, "d", "lr", "beta2_decay", "weight_decay"),
            eps1=eps1,
            eps2=eps2,
            maximize=bool(group["maximize"]),
            **amp,
            **lowprec,
        )

    def _cast_factored(self, params: list[Tensor], lists: dict[str, list[Any]]) -> None:
        for key, name in (("row_var", "row_vars"), ("col_var", "col_vars")):
            for i, p in enumerate(params):
                state = self.state[p]
                value = state.get(key)
                want = self._precision.dtype_for(p)
                if value is not None and value.dtype != want:
                    state[key] = lists[name][i] = value.to(want)
