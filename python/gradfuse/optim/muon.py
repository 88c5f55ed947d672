"""gradfuse.optim.Muon: torch.optim.Muon, fused and batched, with an auxiliary AdamW inside."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Unpack

import torch
from torch import Tensor, nn
from torch.optim.optimizer import ParamsT

from gradfuse import _buffers
from gradfuse._compile import is_compiling, record_real_views
from gradfuse.functional._muon import MUON_PREPARE, muon_
from gradfuse.functional._updates import adamw_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions, group_values
from gradfuse.optim._torch_compat import (
    check_betas,
    check_lr,
    real_views,
    real_views_of,
    scalar_state,
    torch_defaults,
)

# torch.optim._muon's defaults (Keller Jordan's constants).
_NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
# The Muon groups' hyperparameters as muon_ takes them (ns_dtype: a default for old groups);
# the constructor's AdamW-group arguments, which are not torch's defaults.
_MUON_KEYS = (
    "lr",
    "weight_decay",
    "momentum",
    "nesterov",
    "ns_coefficients",
    "eps",
    "ns_steps",
    "adjust_lr_fn",
)
_NOT_DEFAULTS = ("adamw_betas", "adamw_eps")
# The state keys of both kinds of group and their 8-bit maps (True: signed).
_SIGNED_KEYS = {"momentum_buffer": True, "exp_avg": True, "exp_avg_sq": False}
_ADAMW_STATE = ("exp_avg", "exp_avg_sq")


class Muon(FusedOptimizer):
    """Muon (momentum orthogonalised by Newton-Schulz), fused: a drop-in for
    :class:`torch.optim.Muon`, and the usual recipe (Muon for the hidden matrices, AdamW for the
    rest) in one optimizer.

    Same signature, defaults, checks, state (``momentum_buffer``) and results as torch's for 2-D
    params; ``state_dict`` loads into either class. Per step, per weight::

        buf = buf.lerp(g, 1 - momentum);  u = g.lerp(buf, momentum) if nesterov else buf
        O = newton_schulz(u)                       # ns_steps quintic iterations
        p = p * (1 - lr * weight_decay) - adjusted_lr * O

    What differs from torch's for-loop (see :mod:`gradfuse.functional._muon`): the elementwise
    work is two fused native passes, and the Newton-Schulz iteration runs once per group of
    weights of one matrix shape (batched matmuls), in bfloat16 as torch's does (bfloat16
    values, float32 products), or in float32 / float64 with ``ns_dtype``.

    Beyond torch:

    - params of any rank >= 2: a weight is orthogonalised as the matrix of its first dimension
      by the product of the others (conv kernels ``(out, in, kh, kw)`` as ``(out, in*kh*kw)``);
      ``adjust_lr_fn`` uses that matrix's shape;
    - param groups with ``use_muon=False`` are updated by gradfuse's fused AdamW (torch's
      ``AdamW`` with that group's ``lr``, ``betas``, ``eps``, ``weight_decay``; state ``step``,
      ``exp_avg``, ``exp_avg_sq`` as torch's AdamW keeps them). ``betas`` and ``eps`` default to
      ``adamw_betas`` and ``adamw_eps``; ``lr`` and ``weight_decay`` to this optimizer's, as for
      any group. One optimizer, one ``state_dict``, one LR scheduler;
      :func:`muon_param_groups` splits a model's parameters into the two groups;
    - ``max_grad_norm`` (global-norm clipping over every group, inside the update) and AMP:
      ``torch.amp.GradScaler`` hands this optimizer its scale and verdict, and a step with an
      inf/NaN gradient changes nothing;
    - the precision policies of every gradfuse optimizer (:mod:`gradfuse.optim._precision`),
      in both kinds of group: ``master_weights``, ``rounding="stochastic"`` and ``kahan`` for
      16-bit params (the param update of the apply pass), ``state_dtype`` for the momentum
      buffers (bfloat16 for float32 params, float32 for 16-bit ones) and the AdamW moments,
      and ``state_dtype=torch.uint8`` (or ``"8bit"``, or :class:`Muon8bit`): block-wise 8-bit
      momentum buffers (signed map, ``momentum_buffer_absmax``) for params of at least
      ``min_8bit_size`` elements. Buffers not in their gradient's dtype are updated through a
      float32 working copy (see :mod:`gradfuse.functional._muon`). Not for DTensor params yet.

    ``ns_dtype`` is also a param-group key (a group may run its iteration in float32).

    Distributed: under DDP (gradients all-reduced before ``step``) every rank runs the same
    step, as with every gradfuse optimizer. DTensor params (FSDP2's ``fully_shard``, HSDP, row
    or column tensor parallelism) work in both kinds of group, with DTensor state as torch
    keeps it: the elementwise passes run on each rank's local shard, and for the Newton-Schulz
    iteration each sharded matrix is put together on one rank (the matrices spread over the
    ranks by cost, each rank orthogonalising its share, batched per shape) and every rank gets
    its shard of the result back (two ``all_to_all`` per process group and dtype; see
    :mod:`gradfuse.functional._muon_sharded`). Results equal the unsharded optimizer's.
    Supported placements: ``Shard(d)`` (any dim, even or uneven shards) on one mesh dimension
    and ``Replicate()`` on the others; other shardings (a weight sharded on two mesh dims,
    strided shards) raise NotImplementedError before anything is written. Every rank must step
    the same params (as FSDP2 does).
    """

    _update_fn = staticmethod(muon_)
    _spec = MUON_PREPARE
    _setstate_defaults: ClassVar[dict[str, Any]] = {"use_muon": True, "ns_dtype": torch.bfloat16}

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = _NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: torch.dtype = torch.bfloat16,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # Same checks, same order, same messages as torch.optim.Muon.
        check_lr(lr)
        if not momentum >= 0.0:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        if ns_dtype not in (torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(
                f"ns_dtype must be torch.bfloat16 (torch's), torch.float32 or torch.float64, "
                f"got {ns_dtype!r}"
            )
        check_betas(adamw_betas)
        if not adamw_eps >= 0.0:
            raise ValueError(f"Invalid adamw_eps value: {adamw_eps}")
        self._adamw_defaults = {"betas": tuple(adamw_betas), "eps": adamw_eps}
        defaults = {**torch_defaults(locals(), but=_NOT_DEFAULTS), "use_muon": True}
        super().__init__(params, defaults, **options)
        self._precision.signed_keys = dict(_SIGNED_KEYS)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; a Muon group's params must have 2 or more dimensions
        (checked before the group is added), an AdamW group (``use_muon=False``) gets
        ``betas`` and ``eps`` from ``adamw_betas`` / ``adamw_eps`` unless it sets them."""
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif not isinstance(params, set):  # torch refuses sets with its own message
            params = list(params)
        param_group["params"] = params
        if param_group.get("use_muon", True):
            for p in params:
                if isinstance(p, Tensor) and p.ndim < 2:
                    raise ValueError(
                        f"Muon only supports parameters with 2 or more dimensions in a Muon "
                        f"group whereas we found a parameter with size: {p.size()}; put "
                        f"biases, norms and other 1-D params in a group with use_muon=False "
                        f"(AdamW), e.g. with gradfuse.optim.muon_param_groups(model)"
                    )
        else:
            for key, value in getattr(self, "_adamw_defaults", {}).items():
                param_group.setdefault(key, value)
            check_betas(param_group.get("betas", (0.9, 0.999)))
        super().add_param_group(param_group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._precision.signed_keys = dict(_SIGNED_KEYS)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # a torch.optim.Muon checkpoint lacks these keys
            for key, value in self._setstate_defaults.items():
                group.setdefault(key, value)

    # --- step --------------------------------------------------------------------------------

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        if group.get("use_muon", True):
            self._muon_update(group, amp)
        else:
            self._adamw_update(group, amp)

    def _muon_update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if torch.is_complex(p):  # torch's messages
                raise RuntimeError("Muon does not support complex parameters")
            if grad.is_sparse:
                raise RuntimeError("Muon does not support sparse gradients")
            params.append(p)
            grads.append(grad)
        if not params:
            return
        precision = self._precision
        if precision.changes_state or precision.rounding != "nearest":
            self._muon_update_policy(group, amp, params, grads)
            return
        # New buffers are handed to the state only once the update has checked everything.
        state = self.state
        created: dict[int, Tensor] = {}
        bufs: list[Tensor] = []
        for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
            buf = state[p].get("momentum_buffer") if p in state else None
            if buf is None:
                buf = torch.zeros_like(grad, memory_format=torch.preserve_format)
                created[i] = buf
            bufs.append(buf)
        muon_(
            params,
            grads,
            bufs,
            **group_values(group, *_MUON_KEYS),
            ns_dtype=group.get("ns_dtype", torch.bfloat16),
            **amp,
        )
        for i, buf in created.items():
            state[params[i]]["momentum_buffer"] = buf

    def _muon_update_policy(
        self, group: dict[str, Any], amp: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        """The Muon step under a precision policy: each param's state brought to the policy
        (buffer in the state dtype or 8-bit, master copy, Kahan compensation) in a copy of its
        state dict, handed to ``state`` only once the update has checked everything."""
        precision = self._precision
        for i, p in enumerate(params):
            if _buffers._is_dtensor(p):
                raise NotImplementedError(
                    f"{type(self).__name__}: param {i} of a Muon group is a DTensor; "
                    f"master_weights, kahan, rounding='stochastic' and momentum buffers in "
                    f"another dtype than the params' (state_dtype) are not supported for DTensor "
                    f"params yet"
                )
        pending: dict[Tensor, dict[str, Any]] = {}
        for p in params:
            st = dict(self.state[p]) if p in self.state else {}
            if st.get("momentum_buffer") is None:
                st["momentum_buffer"] = precision.full(p, 0)
            precision.prepare_state(p, st)
            pending[p] = st
        lowprec = precision.kwargs(type(self).__name__, pending, params, ("momentum_buffer",))
        muon_(
            params,
            grads,
            [pending[p]["momentum_buffer"] for p in params],
            **group_values(group, *_MUON_KEYS),
            ns_dtype=group.get("ns_dtype", torch.bfloat16),
            **amp,
            **lowprec,
        )
        for p, st in pending.items():
            self.state[p] = st

    def _adamw_update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:  # torch.optim.AdamW's message
                raise RuntimeError(
                    "Adam does not support sparse gradients, please consider SparseAdam instead"
                )
            params.append(p)
            grads.append(p.grad)
        if not params:
            return
        state = self.state
        precision = self._precision
        steps, exp_avgs, exp_avg_sqs = [], [], []
        for p in params:
            st = state[p]
            if len(st) == 0:  # torch.optim.AdamW's first-step state (in the state dtype)
                st["step"] = scalar_state(0.0, p.device, False)
                st["exp_avg"] = self._state_zeros(p)
                st["exp_avg_sq"] = self._state_zeros(p)
            if precision.changes_state:
                precision.prepare_state(p, st)
            steps.append(st["step"])
            exp_avgs.append(st["exp_avg"])
            exp_avg_sqs.append(st["exp_avg_sq"])
        view = real_views_of(params)
        beta1, beta2 = group["betas"]
        lists = (params, grads, exp_avgs, exp_avg_sqs)
        kwargs = {
            "state_steps": steps,
            "beta1": beta1,
            "beta2": beta2,
            **group_values(group, "lr", "eps", "weight_decay"),
            **amp,
            **precision.kwargs(type(self).__name__, state, params, _ADAMW_STATE),
        }
        if view is real_views and is_compiling():
            # Complex params under torch.compile: the op takes their real views when it runs,
            # as FusedOptimizer._update does (see _compile.record_real_views).
            record_real_views(adamw_, *lists, **kwargs)
        else:
            adamw_(*map(view, lists), **kwargs)


def muon_param_groups(
    model: nn.Module,
    *,
    head: nn.Module | Iterable[nn.Module] | None = None,
    muon: dict[str, Any] | None = None,
    adamw: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A model's trainable parameters split into the two groups of the Muon recipe, for
    :class:`Muon`: ``[{"params": hidden matrices, **muon}, {"params": the rest, "use_muon":
    False, **adamw}]`` (an empty group is left out).

    AdamW gets every parameter with fewer than 2 dimensions (biases, norm gains), the weights of
    ``nn.Embedding`` / ``nn.EmbeddingBag`` modules, and the parameters of ``head``: the output
    layer(s), by default the model's last ``nn.Linear`` (in registration order; pass
    ``head=()`` for none, or the module(s) to treat as output layers). Muon gets every other
    parameter with 2 or more dimensions (hidden linear and conv weights). A parameter shared by
    several modules (tied embeddings) is listed once, in AdamW if any of its uses says so.
    ``muon`` / ``adamw``: extra keys of each group (``lr``, ``weight_decay``, ``betas``, ...)::

        groups = muon_param_groups(model, muon={"lr": 0.02}, adamw={"lr": 3e-4})
        opt = gradfuse.optim.Muon(groups, weight_decay=0.01)
    """
    if head is None:
        linears: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
        heads = linears[-1:]
    elif isinstance(head, nn.Module):
        heads = [head]
    else:
        heads = list(head)
    to_adamw: set[int] = set()
    for m in heads:
        to_adamw.update(id(p) for p in m.parameters())
    for m in model.modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
            to_adamw.update(id(p) for p in m.parameters(recurse=False))
    hidden: list[Tensor] = []
    rest: list[Tensor] = []
    for p in model.parameters():  # each shared parameter once
        if not p.requires_grad:
            continue
        (rest if p.ndim < 2 or id(p) in to_adamw else hidden).append(p)
    groups: list[dict[str, Any]] = []
    if hidden:
        groups.append({"params": hidden, **(muon or {}), "use_muon": True})
    if rest:
        groups.append({"params": rest, **(adamw or {}), "use_muon": False})
    return groups
