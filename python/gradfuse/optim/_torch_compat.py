"""torch.optim compatibility: the helpers with which gradfuse's optimizers behave as torch's do
(constructor checks and messages, ``step`` scalars, capturable rules, complex params)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor


def torch_defaults(arguments: dict[str, Any], *, but: tuple[str, ...] = ()) -> dict[str, Any]:
    """A param group's ``defaults`` as torch builds them: the constructor's arguments (its
    ``locals()``, taken before it binds a name of its own) but ``params``, the gradfuse
    ``options`` (handed to :class:`~gradfuse.optim.FusedOptimizer` on their own) and ``but``."""
    skip = ("self", "params", "options", "__class__", *but)
    return {name: value for name, value in arguments.items() if name not in skip}


def refuse_differentiable(name: str, differentiable: bool) -> None:
    if differentiable:
        raise NotImplementedError(
            f"gradfuse.optim.{name}: differentiable=True is not supported; the fused update "
            f"runs outside autograd. Use torch.optim.{name}(..., differentiable=True) to "
            f"differentiate through the optimizer step."
        )


def check_fused_foreach(fused: bool | None, foreach: bool | None, differentiable: bool) -> None:
    """The errors torch raises for contradictory fused/foreach/differentiable flags."""
    if fused:
        if differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


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


def real_views(tensors: list[Tensor]) -> list[Tensor]:
    """:func:`real_view` of every tensor of a list."""
    return [real_view(t) for t in tensors]


def real_views_of(params: list[Tensor]) -> Callable[[list[Tensor]], list[Tensor]]:
    """:func:`real_views` when some param is complex (its grads and state are complex with
    it), otherwise the lists as they are: one ``is_complex()`` per param rather than one per
    tensor of every list (an Adam step over a model passes ~600 tensors)."""
    if any(p.is_complex() for p in params):
        return real_views
    return same_list


def same_list(tensors: list[Tensor]) -> list[Tensor]:
    """The lists as they are (no param is complex)."""
    return tensors


_LABELS = {"lr": "learning rate", "eps": "epsilon value"}


def check_nonnegative(nan_passes: bool = False, /, **values: Any) -> None:
    """torch's ``Invalid <name> value: <value>`` checks (``Invalid learning rate``, ``Invalid
    epsilon value``), in the keyword order given, which is each torch optimizer's own order.
    ``lr`` may be a 1-element tensor (``Tensor lr must be 1-element`` otherwise).
    ``nan_passes``: torch's SGD tests ``value < 0``, which NaN passes; the others refuse NaN."""
    _check_lr_tensor(values.get("lr"))
    for name, value in values.items():
        if name == "betas":
            check_betas(value)
        elif (value < 0.0) if nan_passes else not value >= 0.0:
            raise ValueError(f"Invalid {_LABELS.get(name, name + ' value')}: {value}")


def check_betas(betas: tuple[Any, Any]) -> None:
    for i in (0, 1):
        if not 0.0 <= betas[i] < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")


def check_lr(lr: float | Tensor) -> None:
    """torch's learning-rate checks in its newer optimizers (Adafactor, Muon), with their
    messages: ``Tensor lr must be 1-element``, ``Learning rate should be >= 0 but is: <lr>``."""
    _check_lr_tensor(lr)
    if not lr >= 0.0:
        raise ValueError(f"Learning rate should be >= 0 but is: {lr}")


def _check_lr_tensor(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
