"""What every gradfuse optimizer shares: torch.optim.Optimizer semantics around a fused step.

Subclasses keep torch's constructor signature, defaults, validation messages, state names and
``state_dict`` layout, so a checkpoint moves between torch and gradfuse in both directions; their
``step`` collects each param group's tensors and hands them to one function of
:mod:`gradfuse.functional`, which groups them by (device, dtype) into native calls.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor


def scalar_dtype(is_fused: bool | None = None) -> Any:
    """torch's dtype for ``step`` counters (torch.optim.optimizer._get_scalar_dtype)."""
    from torch.optim.optimizer import _get_scalar_dtype

    return _get_scalar_dtype(is_fused)  # type: ignore[no-untyped-call]


def refuse_differentiable(name: str, differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            f"gradfuse.optim.{name}: differentiable=True is not supported; the fused update "
            f"runs outside autograd. Use torch.optim.{name}(..., differentiable=True) to "
            f"differentiate through the optimizer step."
        )


def params_with_grad(group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], bool]:
    """The params of a group that have a gradient, their gradients, and whether any is sparse."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    sparse = False
    for p in group["params"]:
        if p.grad is None:
            continue
        params.append(p)
        grads.append(p.grad)
        sparse = sparse or p.grad.is_sparse
    return params, grads, sparse


def check_fused_foreach(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    """The errors torch raises for contradictory fused/foreach/differentiable flags."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def grad_scaling(optimizer: Any) -> dict[str, Any]:
    """The GradScaling keyword arguments of one ``step()``, for the functional call.

    torch.amp.GradScaler sees ``_step_supports_amp_scaling = True`` on every gradfuse optimizer
    and, instead of unscaling the gradients itself, sets ``optimizer.grad_scale`` (None when the
    user already called ``scaler.unscale_``) and ``optimizer.found_inf`` for the duration of
    ``step()``. The kernels then divide the gradients by ``grad_scale`` inside the update pass,
    and a nonzero ``found_inf`` makes the step change nothing (params, state and ``step``).
    """
    return {
        "grad_scale": getattr(optimizer, "grad_scale", None),
        "found_inf": getattr(optimizer, "found_inf", None),
    }


def real_view(t: Tensor) -> Tensor:
    """Complex tensors are updated through their real view, as torch's for-loop does."""
    if t.is_complex():  # the method, not torch.is_complex: called for every tensor of a step
        import torch

        return torch.view_as_real(t)
    return t


def check_capturable(
    capturable: bool, params: list[Tensor], *counters: list[Tensor], what: str = "state_steps"
) -> None:
    """torch's check (and message) for capturable=True: params and their step tensors must live
    on a device that supports graph capture (not the CPU). Checked before anything changes."""
    import torch

    # As torch: under torch.compile the compiler handles the cudagraph checks (dynamo may set
    # capturable=True on the groups of an optimizer it compiles).
    if not capturable or torch.compiler.is_compiling():
        return
    from torch.optim.optimizer import _get_capturable_supported_devices

    supported = _get_capturable_supported_devices()
    for i, p in enumerate(params):
        devices = {p.device.type, *(c[i].device.type for c in counters)}
        if len(devices) != 1 or p.device.type not in supported:
            raise AssertionError(
                f"If capturable=True, {what} must be on supported devices: {supported}."
            )


def capturable_step(group: dict[str, Any], params: list[Tensor]) -> bool:
    """Whether this group's step takes the functional ``capturable=True`` path (step counters
    and scalars on the device, no host reads).

    torch.compile (dynamo) sets ``capturable=True`` on the groups of an optimizer it traces,
    for its CUDA graphs; on the CPU there are none, and the host path keeps a compiled step
    bitwise equal to the eager one (tests/integrations/test_compile.py).
    """
    import torch

    if not group["capturable"]:
        return False
    if torch.compiler.is_compiling():
        return any(not p.is_cpu for p in params)
    return True


def scalar_state(
    value: float, device: Any, on_device: bool, *, fused: bool | None = None
) -> Tensor:
    """A 0-dim state scalar (``step``, ``mu_product``) placed and typed exactly as torch does:
    on the param's device when capturable (or fused), else on the CPU."""
    import torch

    # torch.optim.optimizer._get_scalar_dtype: float32 when fused, else float64 only under a
    # float64 default dtype.
    default = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    if on_device:
        return torch.full((), value, dtype=torch.float32 if fused else default, device=device)
    return torch.tensor(value, dtype=default)


def upgrade_scalar_state(
    optimizer: Any, key: str, on_device: Any, *, fused_key: str | None = None
) -> None:
    """torch's ``__setstate__`` conversion of a Python-number state scalar to a tensor."""
    import torch

    for group in optimizer.param_groups:
        fused = group.get(fused_key) if fused_key else None
        for p in group["params"]:
            p_state = optimizer.state.get(p, [])
            if len(p_state) != 0 and not torch.is_tensor(p_state[key]):
                p_state[key] = scalar_state(
                    float(p_state[key]), p.device, bool(on_device(group)), fused=fused
                )


class MaxGradNormMixin:
    """The keyword-only ``max_grad_norm`` extension, shared by every gradfuse optimizer.

    With ``max_grad_norm`` set, each step first computes the global 2-norm of all the
    optimizer's gradients in one fused pass (of the unscaled gradients under AMP), then passes
    ``clip_coef = min(max_grad_norm / (norm + 1e-6), 1)`` to the update, which multiplies each
    gradient by it as it reads it: no pass rewrites the gradients, and on CUDA the coefficient
    stays on the device (no host synchronisation). The result equals
    ``torch.nn.utils.clip_grad_norm_(params, max_grad_norm)`` followed by the step, except that
    ``p.grad`` is left unclipped.

    The setting is an attribute of the optimizer, not a param-group option, so ``state_dict()``
    keeps torch's layout exactly and loads into the torch class of the same name; it survives
    pickling (``__getstate__``) but not ``state_dict()`` (pass it to the constructor again).

    Use: call ``_init_max_grad_norm`` in ``__init__`` and pass ``clip_coef=self._clip_coef()``
    to the functional update of every group.
    """

    max_grad_norm: float | None

    def _init_max_grad_norm(self, max_grad_norm: float | None) -> None:
        if max_grad_norm is not None:
            value = float(max_grad_norm)
            if not value >= 0.0:
                raise ValueError(f"Invalid max_grad_norm value: {max_grad_norm}")
            max_grad_norm = value
        self.max_grad_norm = max_grad_norm

    def _clip_coef(self, grad_scale: Tensor | None = None) -> Tensor | None:
        """The clipping coefficient for this step (1-element float32 tensor), or None.

        ``grad_scale``: GradScaler's scale when the gradients arrive scaled (in-kernel AMP
        unscaling); the norm is then of the unscaled gradients.
        """
        if self.max_grad_norm is None:
            return None
        import torch

        from gradfuse import _clip

        param_groups: list[dict[str, Any]] = self.param_groups  # type: ignore[attr-defined]
        grads = [p.grad for g in param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return None
        norm = _clip.total_norm("max_grad_norm", grads, 2.0)
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device, norm.dtype).reshape(())
        coef = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
        return coef.to(torch.float32).reshape(1)

    def __getstate__(self) -> dict[str, Any]:
        state = cast("dict[str, Any]", super().__getstate__())
        state["max_grad_norm"] = getattr(self, "max_grad_norm", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self.__dict__.setdefault("max_grad_norm", None)


def amp_scaling(optimizer: object) -> tuple[Tensor | None, Tensor | None]:
    """:func:`grad_scaling` as a (grad_scale, found_inf) pair."""
    scaling = grad_scaling(optimizer)
    return scaling["grad_scale"], scaling["found_inf"]
