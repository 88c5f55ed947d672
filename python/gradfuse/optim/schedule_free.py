"""gradfuse.optim.ScheduleFreeAdamW and ScheduleFreeSGD: the ``schedulefree`` package's
AdamWScheduleFree and SGDScheduleFree (Defazio et al. 2024), fused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Unpack

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional._engine import Spec
from gradfuse.functional._schedule_free import (
    SCHEDULE_FREE_ADAMW,
    SCHEDULE_FREE_SGD,
    ScheduleFreeGroup,
    schedule_free_adamw_,
    schedule_free_eval_,
    schedule_free_sgd_,
    schedule_free_train_,
)
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import check_nonnegative, real_views_of, torch_defaults

# The reference's message (schedulefree 1.4.1), raised when step() runs in eval mode.
_NOT_IN_TRAIN_MODE = (
    "Optimizer was not in train mode when step is called. Please insert .train() and .eval() "
    "calls on the optimizer. See documentation for details."
)


# The running sums every group starts from, as the schedulefree package initialises them.
_BOOKKEEPING: dict[str, Any] = {
    "k": 0,
    "train_mode": False,
    "weight_sum": 0.0,
    "lr_max": -1.0,
    "scheduled_lr": 0.0,
}


class _ScheduleFree(FusedOptimizer):
    """What both schedule-free optimizers share: the y/x switch, the mode check, the group
    bookkeeping and ``z`` created as a copy of the param."""

    _sparse_error: ClassVar[str | None] = None
    _no_8bit = "z is a copy of the weights, which 8 bits would round away"
    _step_fn: ClassVar[Callable[..., ScheduleFreeGroup | None]]

    def _beta1(self, group: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _init_state(self, p: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        # As the reference: z = a copy of the param (in the state dtype), then zeros for the rest.
        state["z"] = torch.empty_like(
            p, dtype=self._precision.dtype_for(p), memory_format=torch.preserve_format
        ).copy_(p.detach())
        for st in self._spec.state[1:]:
            state[st.key] = self._state_zeros(p)

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        params, grads, lists = self._gather(group)
        if any(g.is_sparse for g in grads):
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
        view = real_views_of(params)
        state_lists = {name: view(values) for name, values in lists.items()}
        after = type(self)._step_fn(
            view(params),
            view(grads),
            **state_lists,
            k=group["k"],
            **self._options(group),  # the spec's hyperparameters (lr_max, weight_sum too), maximize
            **amp,
            **self._precision.kwargs(type(self).__name__, self.state, params),
        )
        if after is not None:  # None: AMP skipped the step, nothing changed
            group["k"] = after.k
            group["scheduled_lr"] = after.scheduled_lr
            group["lr_max"] = after.lr_max
            group["weight_sum"] = after.weight_sum

    def _step(self, closure: Callable[[], float] | None = None) -> float | None:
        # A step runs in train mode only, as the reference requires.
        if not self.param_groups[0]["train_mode"]:
            raise Exception(_NOT_IN_TRAIN_MODE)  # noqa: TRY002 - the reference's exact type
        return super()._step(closure)

    @torch.no_grad()
    def _switch(self, to_train: bool) -> None:
        move = schedule_free_train_ if to_train else schedule_free_eval_
        name = type(self).__name__
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            params = [p for p in group["params"] if "z" in self.state[p]]
            if params:
                if self._precision.changes_state:
                    for p in params:
                        self._precision.prepare_state(p, self.state[p])
                view = real_views_of(params)
                move(
                    view(params),
                    view([self.state[p]["z"] for p in params]),
                    beta1=self._beta1(group),
                    **self._precision.kwargs(name, self.state, params),
                )
            group["train_mode"] = to_train

    def eval(self) -> None:
        """Switch the params to x, the averaged point to evaluate and checkpoint (one fused pass
        per group in train mode; the reference's ``optimizer.eval()``)."""
        self._switch(False)

    def train(self) -> None:
        """Switch the params back to y, where gradients are taken (one fused pass per group in
        eval mode; the reference's ``optimizer.train()``). Call it before training starts."""
        self._switch(True)


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), fused: a drop-in
    for ``schedulefree.AdamWScheduleFree`` (same arguments, defaults, state ``z`` and
    ``exp_avg_sq``, param-group keys ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``,
    ``train_mode``; checkpoints load both ways).

    No learning-rate schedule is needed: ``warmup_steps`` warms ``lr`` up linearly, and the
    iterate is an average weighted by ``(k + 1) ** r * lr_max ** weight_lr_power``. As with the
    reference, call ``optimizer.train()`` before training and ``optimizer.eval()`` before
    evaluating or saving a checkpoint: the params are y during training and x (the average)
    in eval mode; each switch is one fused pass over the params. ``step()`` in eval mode
    raises the reference's exception. BatchNorm running statistics are the user's business,
    as with the reference: they were collected at y, so recompute them at x (a few forward
    passes in train mode after ``optimizer.eval()``) before evaluating.

    Differences: the gradients are left as they are (the reference divides them in place);
    ``lr`` may be a 1-element tensor (read on the host); ``foreach`` is accepted and ignored.
    Extensions (keyword-only, off by default): ``maximize``, AMP (GradScaler skips nothing
    itself: a step with inf/NaN gradients changes nothing, bookkeeping included),
    ``max_grad_norm`` and the precision options of every gradfuse optimizer (see
    :class:`~gradfuse.optim.FusedOptimizer`).
    """

    _step_fn = staticmethod(schedule_free_adamw_)
    _spec: ClassVar[Spec] = SCHEDULE_FREE_ADAMW
    _setstate_defaults: ClassVar[dict[str, Any]] = {"maximize": False, "foreach": True}

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = True,
        *,
        maximize: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # The reference checks nothing; these are torch.optim.AdamW's checks and messages.
        check_nonnegative(lr=lr, eps=eps, betas=betas, weight_decay=weight_decay)
        defaults = {**torch_defaults(locals()), **_BOOKKEEPING}
        super().__init__(params, defaults, **options)

    def _beta1(self, group: dict[str, Any]) -> Any:
        return group["betas"][0]


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-free SGD (Defazio et al. 2024), fused: a drop-in for
    ``schedulefree.SGDScheduleFree`` (same arguments, defaults, errors, state ``z`` and
    param-group keys). ``momentum`` plays beta1's part in the interpolation; everything said
    of :class:`ScheduleFreeAdamW` (``train()`` / ``eval()``, BatchNorm, extensions) holds.
    """

    _step_fn = staticmethod(schedule_free_sgd_)
    _spec: ClassVar[Spec] = SCHEDULE_FREE_SGD
    _setstate_defaults: ClassVar[dict[str, Any]] = {"maximize": False, "foreach": True}

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = True,
        *,
        maximize: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # The reference's checks and messages.
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if momentum <= 0 or momentum >= 1:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        defaults = {**torch_defaults(locals()), **_BOOKKEEPING}
        super().__init__(params, defaults, **options)

    def _beta1(self, group: dict[str, Any]) -> Any:
        return group["momentum"]
