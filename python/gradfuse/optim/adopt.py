"""gradfuse.optim.ADOPT: ADOPT (Taniguchi et al. 2024), fused; a drop-in for
``pytorch_optimizer.ADOPT``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.optim.optimizer import ParamsT

from gradfuse._compile import is_compiling
from gradfuse.functional._adopt import ADOPT as ADOPT_SPEC
from gradfuse.functional._adopt import adopt_, default_clip_lambda
from gradfuse.optim._optimizer import FusedOptimizer, take_extensions


class ADOPT(FusedOptimizer):
    """ADOPT ("Modified Adam Can Converge with Any beta2 with the Optimal Rate", Taniguchi et
    al. 2024), fused: the constructor, defaults and results of ``pytorch_optimizer.ADOPT``
    (4.1.0), which is the authors' published rule (their code's ``step ** 0.25`` clip
    included) plus pytorch_optimizer's weight decay options.

    Per param, with ``m = state["exp_avg"]``, ``v = state["exp_avg_sq"]`` (zeros at first)::

        g = grad (+ weight_decay * p unless weight_decouple)
        p *= 1 - weight_decay * lr            (weight_decouple; * 1 instead of * lr: fixed_decay)
        step 1:  v = g * g                    (the param does not move)
        step t:  n = clamp(g / max(sqrt(v), eps), -clip_lambda(t), clip_lambda(t))
                 m = lerp(m, n, 1 - beta1);  p -= lr * m;  v = beta2 * v + (1 - beta2) * g^2

    ``clip_lambda=None`` turns the clipping off: that is the paper's Algorithm 1; the clip
    (``step ** 0.25`` by default) is in the authors' code and in pytorch_optimizer, which are
    followed here. Differences from pytorch_optimizer, all where it has no single answer:

    - the step count is kept per param in ``state["step"]`` (torch's layout, the authors'
      code) where pytorch_optimizer keeps one ``group["step"]``: the two agree whenever every
      param of a group has a gradient at every step; a param that first gets a gradient later
      starts with its own initialising step here. ``group["step"]`` is kept too (the count of
      the group's latest step), and :meth:`load_state_dict` takes pytorch_optimizer's
      checkpoints (each param's step from its group's), so checkpoints move both ways;
    - pytorch_optimizer's extra options ``cautious`` and ``stable_adamw`` (per-tensor means,
      not elementwise) raise NotImplementedError; other extra keyword arguments are kept in the
      param groups as it keeps them;
    - the gradient is not modified (pytorch_optimizer negates ``p.grad`` in place under
      ``maximize`` and adds the L2 term to it).

    AMP, ``max_grad_norm`` and the precision options as for every gradfuse optimizer (see
    :class:`~gradfuse.optim.FusedOptimizer`).
    """

    _update_fn = staticmethod(adopt_)
    _spec = ADOPT_SPEC
    _sparse_error = "ADOPT does not support sparse gradients"
    _setstate_defaults: ClassVar[dict[str, Any]] = {"maximize": False, "foreach": None}

    clip_lambda: Callable[[int], float] | None

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        clip_lambda: Callable[[int], float] | None = default_clip_lambda,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        foreach: bool | None = None,
        eps: float = 1e-6,
        maximize: bool = False,
        **kwargs: Any,
    ) -> None:
        # gradfuse's extensions (keyword-only, as for every gradfuse optimizer), then
        # pytorch_optimizer's other keywords.
        options = take_extensions(kwargs)
        # pytorch_optimizer's checks and messages, in its order.
        if lr is not None and lr < 0.0:
            raise ValueError(
                f"learning rate must be positive. ({lr} > 0)"
            )  # NegativeLRError's words
        for i, name in ((0, "beta1"), (1, "beta2")):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"{name} must be in the range [0.0, 1.0)")
        if weight_decay < 0.0:
            raise ValueError("weight_decay must be non-negative")
        if eps < 0.0:
            raise ValueError("eps must be non-negative")
        for name in ("cautious", "stable_adamw"):
            if kwargs.get(name):
                raise NotImplementedError(
                    f"ADOPT: {name}=True is not supported by gradfuse (it needs a per-tensor "
                    f"reduction); use pytorch_optimizer.ADOPT for it"
                )
        if clip_lambda is not None and not callable(clip_lambda):
            raise TypeError(
                f"clip_lambda must be a callable of the step or None, got {clip_lambda!r}"
            )
        self.clip_lambda = clip_lambda
        # id(group) -> (group, its first param's step tensor): a group count not read yet
        # (steps under torch.compile; see _sync_group_steps).
        self._group_steps: dict[int, tuple[dict[str, Any], torch.Tensor]] = {}
        self.maximize = maximize
        self.foreach = foreach
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "weight_decouple": weight_decouple,
            "fixed_decay": fixed_decay,
            "foreach": foreach,
            "eps": eps,
            "maximize": maximize,
            **kwargs,
        }
        super().__init__(params, defaults, **options)

    def __str__(self) -> str:
        return "ADOPT"

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        options = super()._options(group)
        options["clip_lambda"] = self.__dict__.get("clip_lambda", default_clip_lambda)
        return options

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        super()._update(group, amp)

        def count() -> None:
            # pytorch_optimizer's group-level count, kept for its checkpoints: the step of the
            # group's first param with a gradient (one host read), once the step is written.
            for p in group["params"]:
                if p.grad is not None:
                    step = self.state.get(p, {}).get("step")
                    if step is not None:
                        if is_compiling():
                            # A host read of a tensor is no part of a traced program (a graph
                            # break): the tensor is kept, and read by _sync_group_steps.
                            self._group_steps[id(group)] = (group, step)
                        else:
                            self._group_steps.pop(id(group), None)
                            group["step"] = int(step)
                    break

        self._defer(count)

    def _sync_group_steps(self) -> None:
        """``group["step"]`` of the groups last stepped under torch.compile, from the step
        tensors kept then (the counts as they are now: the tensors are the params' state)."""
        pending = self.__dict__.get("_group_steps")
        if pending:
            for group, step in pending.values():
                group["step"] = int(step)
            pending.clear()

    def state_dict(self) -> dict[str, Any]:
        self._sync_group_steps()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, and pytorch_optimizer's checkpoints: a param state without ``step`` takes
        its group's ``step`` (pytorch_optimizer counts steps per group)."""
        saved = state_dict.get("state", {})
        missing = {
            k: float(group["step"])
            for group in state_dict.get("param_groups", [])
            if "step" in group
            for k in group["params"]
            if isinstance(saved.get(k), dict) and "step" not in saved[k]
        }
        self.__dict__.get("_group_steps", {}).clear()  # the counts of the state replaced
        if missing:
            state = {
                k: ({**s, "step": torch.tensor(missing[k])} if k in missing else s)
                for k, s in saved.items()
            }
            state_dict = {**state_dict, "state": state}
        super().load_state_dict(state_dict)

    def __getstate__(self) -> dict[str, Any]:
        self._sync_group_steps()
        state = super().__getstate__()
        state["clip_lambda"] = self.__dict__.get("clip_lambda", default_clip_lambda)
        state["maximize"] = self.__dict__.get("maximize", False)
        state["foreach"] = self.__dict__.get("foreach")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("clip_lambda", default_clip_lambda)
        self.__dict__.setdefault("maximize", False)
        self.__dict__.setdefault("foreach", None)
        self.__dict__["_group_steps"] = {}
