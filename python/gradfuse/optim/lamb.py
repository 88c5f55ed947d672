"""gradfuse.optim.LAMB: LAMB (You et al. 2019) with apex ``FusedLAMB``'s semantics, fused."""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from gradfuse.functional import _steps
from gradfuse.functional._reducing import LAMB as LAMB_SPEC
from gradfuse.functional._reducing import lamb_
from gradfuse.optim._optimizer import FusedOptimizer, PolicyOptions
from gradfuse.optim._torch_compat import torch_defaults


class LAMB(FusedOptimizer):
    """LAMB ("Large Batch Optimization for Deep Learning", You et al. 2019), fused, with the
    semantics, arguments and defaults of apex's ``apex.optimizers.FusedLAMB``.

    Per step, for every param with a gradient ``g`` (see :func:`gradfuse.functional.lamb_`)::

        g = g * clip                    (apex's global clipping, below)
        g = g + weight_decay * p        (adam_w_mode=False: L2 into the gradient)
        m = beta1 * m + beta3 * g       (beta3 = 1 - beta1 with grad_averaging, else 1)
        v = beta2 * v + (1 - beta2) * g^2
        u = (m / bc1) / (sqrt(v / bc2) + eps)   (bc = 1 - beta^step with bias_correction)
        u = u + weight_decay * p        (adam_w_mode=True: decoupled weight decay)
        p = p - lr * trust * u          (trust = ||p|| / ||u|| per tensor; 1 where a norm is 0)

    The trust ratio applies to params of groups with ``weight_decay != 0`` only, unless
    ``use_nvlamb=True`` (as apex). Global clipping (apex): with ``norm`` the 2-norm of every
    gradient of every group, gradients are divided by ``norm / max_grad_norm`` when ``norm >
    max_grad_norm``; ``max_grad_norm=0`` or None turns it off (apex would divide by infinity).
    ``step`` is counted per param group (``group["step"]``, as apex and pytorch-optimizer);
    ``state[p]`` holds ``exp_avg`` and ``exp_avg_sq``: the per-param state and ``step`` load both
    ways with apex and ``pytorch_optimizer.Lamb`` (the group options are each library's own; the
    README's LAMB table maps apex's options onto pytorch-optimizer's).

    apex supports float16/float32 params on CUDA only; this runs float32, float64, float16 and
    bfloat16 params on the CPU (a CUDA kernel is compiled but has not run on a GPU yet).
    ``amsgrad=True`` raises as in apex; ``set_grad_none`` is :meth:`zero_grad`'s default.
    ``maximize`` (keyword-only) is a gradfuse extension. AMP: GradScaler's scale and inf check
    are applied inside the step (a skipped step changes nothing, ``step`` included).

    The precision policies (keyword-only, off by default) are every gradfuse optimizer's
    (:mod:`gradfuse.optim._precision`): ``master_weights``, ``state_dtype`` (bfloat16 state for
    float32 params, float32 state for 16-bit ones, ``torch.uint8`` / ``"8bit"``: block-wise
    8-bit ``exp_avg`` / ``exp_avg_sq``, as :class:`gradfuse.optim.LAMB8bit`), ``rounding=
    "stochastic"`` and ``kahan``, with the same state keys and checkpoints. Both norms of the
    trust ratio are those of the param the update computes with (the float32 master under master
    weights) and of the update from the moments as stored, on the CPU and on CUDA.
    """

    _update_fn = staticmethod(lamb_)
    _spec = LAMB_SPEC
    _sparse_error = "LAMB does not support sparse gradients"
    _setstate_defaults: ClassVar[dict[str, Any]] = {"maximize": False}

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        adam_w_mode: bool = True,
        grad_averaging: bool = True,
        set_grad_none: bool = True,
        max_grad_norm: float | None = 1.0,
        use_nvlamb: bool = False,
        *,
        maximize: bool = False,
        **options: Unpack[PolicyOptions],
    ) -> None:
        if amsgrad:
            raise RuntimeError("LAMB does not support the AMSGrad variant.")
        if isinstance(lr, Tensor):
            raise TypeError("LAMB: lr must be a number (apex's FusedLAMB takes a float)")
        if not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = torch_defaults(
            locals(), but=("amsgrad", "adam_w_mode", "set_grad_none", "use_nvlamb")
        )
        super().__init__(params, defaults, max_grad_norm=max_grad_norm or None, **options)
        self.adam_w_mode = bool(adam_w_mode)
        self.set_grad_none = bool(set_grad_none)
        self.use_nvlamb = bool(use_nvlamb)

    def zero_grad(self, set_to_none: bool | None = None) -> None:
        """apex's ``zero_grad``: gradients become None when ``set_grad_none`` (the default)."""
        super().zero_grad(self.set_grad_none if set_to_none is None else set_to_none)

    def _clip_coef(self, grad_scale: Tensor | None = None) -> Tensor | None:
        """apex's clipping as a coefficient: ``max_grad_norm / norm`` where the global 2-norm of
        the (unscaled) gradients exceeds ``max_grad_norm``, else 1."""
        if not self.max_grad_norm:
            return None
        from gradfuse import _clip

        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = _clip.total_norm("max_grad_norm", grads, 2.0).to(torch.float64)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device, norm.dtype).reshape(())
        limit = float(self.max_grad_norm)
        coef = torch.where(norm > limit, limit / norm, torch.ones_like(norm))
        return coef.to(torch.float32).reshape(1)

    def _options(self, group: dict[str, Any]) -> dict[str, Any]:
        """:func:`lamb_`'s keyword arguments from the spec (apex's ``adam_w_mode`` and
        ``use_nvlamb`` are the optimizer's, not the group's), and this step's number."""
        own = {"adam_w_mode": self.adam_w_mode, "use_nvlamb": self.use_nvlamb}
        return {**super()._options({**group, **own}), "step": int(group.get("step", 0)) + 1}

    def _update(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        params, grads, lists = self._gather(group)
        options = self._options(group)
        keys = tuple(st.key for st in self._spec.state)
        lowprec = self._precision.kwargs(type(self).__name__, self.state, params, keys)
        lamb_(params, grads, **lists, **options, **amp, **lowprec)
        if not _steps.found_inf_is_set(amp["found_inf"]):
            group["step"] = options["step"]  # apex: every group counts every step, grads or not

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("adam_w_mode", True)
        self.__dict__.setdefault("set_grad_none", True)
        self.__dict__.setdefault("use_nvlamb", False)
