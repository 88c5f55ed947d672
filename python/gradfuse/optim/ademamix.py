"""gradfuse.optim.AdEMAMix: AdEMAMix (Pagliardini et al. 2024), fused; a drop-in for
bitsandbytes' ``AdEMAMix`` (32-bit state)."""

from __future__ import annotations

from typing import Any, Unpack

import torch
from torch.optim.optimizer import ParamsT

from gradfuse.functional._adopt import ADEMAMIX, ademamix_
from gradfuse.optim._optimizer import FusedOptimizer, OptimizerOptions
from gradfuse.optim._torch_compat import torch_defaults

# bitsandbytes' per-param state keys (32-bit): m1 and m2 stacked in one (2, *shape) tensor,
# and the key under which its state_dict hides them from FSDP.
_BNB_KEYS = ("state1", "state2")
_BNB_WRAPPED = "__bnb_optimizer_quant_state__"


class AdEMAMix(FusedOptimizer):
    """AdEMAMix ("The AdEMAMix Optimizer: Better, Faster, Older", Pagliardini et al. 2024),
    fused: the constructor, defaults and results of bitsandbytes' ``AdEMAMix`` (0.50.2) with
    32-bit state.

    Per param, with ``m1 = state["exp_avg"]``, ``m2 = state["exp_avg_slow"]``,
    ``nu = state["exp_avg_sq"]`` (zeros at first) and ``t = state["step"]`` after ``+= 1``::

        m1 = beta1 * m1 + (1 - beta1) * g;   m2 = beta3_t * m2 + (1 - beta3_t) * g
        nu = beta2 * nu + (1 - beta2) * g * g
        p  = p * (1 - lr * weight_decay)                      (when weight_decay > 0)
        p -= lr * (m1 / (1 - beta1**t) + alpha_t * m2) / (sqrt(nu) / sqrt(1 - beta2**t) + eps)

    ``alpha_t`` warms up linearly over ``t_alpha`` steps and ``beta3_t`` from ``beta1`` to
    ``beta3`` over ``t_beta3`` steps (half-life interpolation), as in bitsandbytes; None means
    no warm-up.

    State layout: bitsandbytes stacks ``m1`` and ``m2`` in one ``state1`` tensor of shape
    ``(2, *p.shape)`` and keeps ``nu`` in ``state2`` and ``step`` as an int; gradfuse keeps
    three tensors of the param's shape (``exp_avg``, ``exp_avg_slow``, ``exp_avg_sq``, the
    names of the paper's code and heavyball) and ``step`` as torch does. :meth:`load_state_dict`
    takes bitsandbytes' checkpoints as they are, and :meth:`bitsandbytes_state_dict` writes
    one that bitsandbytes' ``AdEMAMix.load_state_dict`` takes.

    bitsandbytes keeps float32 state for 16-bit params: ``state_dtype=torch.float32`` gives
    that here (the default is the params' dtype, as every gradfuse optimizer). ``optim_bits=8``
    (or :class:`~gradfuse.optim.AdEMAMix8bit`) keeps block-wise 8-bit state for params of at
    least ``min_8bit_size`` elements (:mod:`gradfuse.optim._quant8`), in gradfuse's layout (a
    bitsandbytes 8-bit checkpoint does not load); ``is_paged`` is accepted and has no effect. ``maximize`` (keyword-only, not in
    bitsandbytes) negates the gradient. AMP, ``max_grad_norm`` and the precision options as for
    every gradfuse optimizer (see :class:`~gradfuse.optim.FusedOptimizer`).
    """

    _update_fn = staticmethod(ademamix_)
    _spec = ADEMAMIX
    _sparse_error = "AdEMAMix does not support sparse gradients"
    _setstate_keys = ("maximize", "alpha", "t_alpha", "t_beta3")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 5.0,
        t_alpha: int | None = None,
        t_beta3: int | None = None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        optim_bits: int = 32,
        min_8bit_size: int = 4096,
        is_paged: bool = False,
        *,
        maximize: bool = False,
        **options: Unpack[OptimizerOptions],
    ) -> None:
        # bitsandbytes' checks and messages, in its order.
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        _check_betas(betas)
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if optim_bits not in (8, 32):
            raise ValueError(f"AdEMAMix: optim_bits must be 8 or 32, got {optim_bits!r}")
        if optim_bits == 8:  # bitsandbytes' 8-bit AdEMAMix: block-wise 8-bit state
            state_dtype = options.get("state_dtype")
            if state_dtype not in (None, torch.uint8, "8bit"):
                raise ValueError(
                    f"AdEMAMix: optim_bits=8 is 8-bit state; it takes no state_dtype={state_dtype!r}"
                )
            options["state_dtype"] = torch.uint8
        if t_beta3 and not (betas[0] > 0.0 and betas[2] > 0.0):
            raise ValueError(
                f"AdEMAMix: the t_beta3 warm-up takes log(beta1) and log(beta3), so both must "
                f"be > 0, got betas={betas!r}"
            )
        self.optim_bits = optim_bits
        self.min_8bit_size = min_8bit_size
        self.is_paged = is_paged
        defaults = torch_defaults(locals(), but=("optim_bits", "min_8bit_size", "is_paged"))
        super().__init__(params, defaults, **options)
        if self._precision.q8:
            self._precision.min_8bit_size = min_8bit_size

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2, beta3 = group["betas"]
        return {
            "lr": group["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "beta3": beta3,
            "alpha": group["alpha"],
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "t_alpha": group["t_alpha"],
            "t_beta3": group["t_beta3"],
            "maximize": group["maximize"],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, and bitsandbytes' ``AdEMAMix`` checkpoints (32-bit state: ``state1`` split
        into ``exp_avg`` and ``exp_avg_slow``, ``state2`` is ``exp_avg_sq``)."""
        state = state_dict.get("state", {})
        if any(_is_bnb_state(s) for s in state.values()):
            state_dict = {**state_dict, "state": {k: _from_bnb(s) for k, s in state.items()}}
        super().load_state_dict(state_dict)

    def bitsandbytes_state_dict(self) -> dict[str, Any]:
        """This optimizer's state in bitsandbytes' 32-bit ``AdEMAMix`` layout (float32
        ``state1`` = stack(exp_avg, exp_avg_slow), ``state2`` = exp_avg_sq, ``step`` an int),
        for ``bitsandbytes.optim.AdEMAMix.load_state_dict``."""
        if self._precision.q8:
            raise NotImplementedError(
                "AdEMAMix.bitsandbytes_state_dict: 8-bit state (optim_bits=8) is written in "
                "gradfuse's layout only; gradfuse.optim.dequantize_state_dict gives float state"
            )
        sd = self.state_dict()
        out: dict[int, Any] = {}
        for k, s in sd["state"].items():
            if "exp_avg" not in s:
                out[k] = s
                continue
            rest = {
                key: v
                for key, v in s.items()
                if key not in ("step", "exp_avg", "exp_avg_slow", "exp_avg_sq")
            }
            out[k] = {
                **rest,
                "step": int(s["step"]),
                "state1": torch.stack([s["exp_avg"], s["exp_avg_slow"]]).to(torch.float32),
                "state2": s["exp_avg_sq"].to(torch.float32).clone(),
            }
        return {"state": out, "param_groups": sd["param_groups"]}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("optim_bits", "min_8bit_size", "is_paged"):
            state[key] = self.__dict__.get(key)
        return state


def _is_bnb_state(s: Any) -> bool:
    return isinstance(s, dict) and (_BNB_WRAPPED in s or "state1" in s)


def _from_bnb(s: Any) -> Any:
    if not _is_bnb_state(s):
        return s
    s = dict(s)
    s.update(s.pop(_BNB_WRAPPED, {}))
    state1, state2 = s.pop("state1"), s.pop("state2")
    if state1.dtype == torch.uint8:
        raise NotImplementedError(
            "AdEMAMix.load_state_dict: this bitsandbytes checkpoint has 8-bit state, which "
            "gradfuse does not support"
        )
    for key in ("unorm_vec",):
        s.pop(key, None)
    step = s.pop("step", 0)
    return {
        **s,
        "step": torch.tensor(float(step), dtype=torch.float32),
        "exp_avg": state1[0].clone(),  # their own storage: the update refuses aliased state
        "exp_avg_slow": state1[1].clone(),
        "exp_avg_sq": state2,
    }


def _check_betas(betas: tuple[float, ...]) -> None:
    """bitsandbytes' checks of AdEMAMix's three betas (its messages)."""
    if len(betas) != 3:
        raise ValueError(f"AdEMAMix: betas must be (beta1, beta2, beta3), got {betas!r}")
    for i in range(len(betas)):
        if not 0.0 <= betas[i] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
