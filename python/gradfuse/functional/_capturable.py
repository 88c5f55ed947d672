"""``capturable=True``: optimizer steps with no host synchronisation, for CUDA graphs.

Without capturable, the functional optimizers read each ``step`` counter (and a tensor ``lr``)
on the host and compute the per-step scalars (bias corrections, step sizes) there, in double,
with torch's Python expressions (the specs in ``_updates.py``). A captured CUDA graph cannot do that: a host
read is a device synchronisation, which capture refuses, and a value read at capture time would
be baked into every replay. With ``capturable=True`` instead:

- the counters stay where they are (torch tensors on the params' device) and are advanced there,
  as torch's fused optimizers advance them: ``step += 1``, then ``step -= found_inf`` under AMP,
  so a step that AMP skips leaves every counter as it was (``_steps.advance``);
- the step-dependent scalars of every tensor are computed on that device with torch tensor ops,
  the same expressions as the host path, in float64 (the host path's double), and stored as one
  contiguous table, one row per tensor of a native call, in the kernel's compute type (float32,
  or float64 for float64 params); the kernel reads row t for tensor t
  (``src/gradfuse/math/per_tensor.h``) and everything else (betas, eps, weight decay) is passed
  as host numbers, as without capturable;
- ``found_inf`` is not read on the host: the kernels read it on the device and skip the update.

Nothing here calls ``.item()``, ``float(tensor)`` or ``bool(tensor)`` on a tensor, or branches
in Python on a tensor's value (tests/functional/test_capturable.py enforces it). The same code
runs on CPU tensors, which is how it is tested on machines without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gradfuse import _buffers
from gradfuse.functional._multi_tensor import Group


def check_number(value: Any, name: str) -> Any:
    """A hyperparameter that may be a 1-element tensor (``lr``), validated without reading it:
    a tensor is returned as a 0-dim tensor (torch's _to_scalar), a number as a float."""
    if _buffers._is_torch_tensor(value):
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a number or a 1-element tensor, got {_buffers.describe(value)}"
            )
        if not value.is_floating_point():
            raise TypeError(
                f"{name}: a tensor {name} must have a floating point dtype, got "
                f"{_buffers.describe(value)}"
            )
        return value.reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name}: with capturable=True, expected a number or a 1-element torch tensor, got "
            f"{value!r}"
        )
    return float(value)


def check_host_number(op: str, value: Any, name: str) -> float:
    """A hyperparameter the kernel takes as a host number (betas...): a tensor would be read on
    the host, which capturable forbids, so it is refused with the reason."""
    if _buffers._is_torch_tensor(value) or type(value).__name__ == "ndarray":
        raise TypeError(
            f"{op}: with capturable=True, {name} must be a Python number: a tensor {name} would "
            f"be read on the host (a device synchronisation), got {_buffers.describe(value)}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    return float(value)


def check_counters(
    op: str,
    name: str,
    counters: Sequence[Any],
    params: Sequence[Any],
    params_name: str = "params",
) -> None:
    """One counter per param, each a 1-element floating point torch tensor on its param's
    device (torch's capturable contract: ``step`` lives with the param)."""
    n = len(params)
    if len(counters) != n:
        raise ValueError(
            f"{op}: expected one entry of {name} per entry of {params_name}, got "
            f"{len(counters)} {name} for {n} {params_name}"
        )
    for i, (c, p) in enumerate(zip(counters, params, strict=True)):
        if not _buffers._is_torch_tensor(c) or c.numel() != 1 or not c.is_floating_point():
            raise TypeError(
                f"{op}: with capturable=True, {name}[{i}] must be a 1-element floating point "
                f"torch tensor (kept on the param's device), got {_buffers.describe(c)}"
            )
        p_device = getattr(p, "device", None)
        if p_device is not None and c.device != p_device:
            raise ValueError(
                f"{op}: with capturable=True, {name}[{i}] must be on the device of "
                f"{params_name}[{i}] ({p_device}), got {_buffers.describe(c)}"
            )


def check_found_inf(op: str, found_inf: Any) -> None:
    if found_inf is not None and not _buffers._is_torch_tensor(found_inf):
        raise TypeError(
            f"{op}: with capturable=True, found_inf must be a torch tensor (read on the device), "
            f"got {_buffers.describe(found_inf)}"
        )


def step_values(counters: Sequence[Any], g: Group) -> Any:
    """The (already advanced) counters of the tensors of ``g``, as one float64 vector on their
    device (the host path computes its scalars from the step in double too)."""
    import torch

    return torch.stack([counters[i].reshape(()) for i in g.indices]).to(torch.float64)


def table_dtype(g: Group) -> Any:
    """The kernel's compute type: float64 for float64 params, else float32 (OpMath)."""
    import torch

    return torch.float64 if g.dtype_code == _buffers.DTYPE_CODES["float64"] else torch.float32


def column(value: Any, like: Any) -> Any:
    """``value`` (a Python number, a 0-dim tensor, or a vector like ``like``) as a float64
    vector shaped like ``like``, on its device. A 0-dim CPU tensor takes part as a scalar (its
    value is read as torch reads CPU scalars in CUDA ops, without a device sync)."""
    import torch

    if _buffers._is_torch_tensor(value) and value.device != like.device and not value.is_cpu:
        value = value.to(like.device)  # a tensor on another GPU: copied (device to device)
    return torch.zeros_like(like, dtype=torch.float64) + value


def build_table(g: Group, step: Any, columns: Sequence[Any]) -> tuple[Any, int, int]:
    """The rows of one native call: ``columns`` (numbers, 0-dim tensors or vectors like
    ``step``, the call's counters from :func:`step_values`) stacked as [n_tensors, K] in the
    kernel's compute type. Returns (the table, which the caller keeps alive across the call,
    its data address, its row stride)."""
    import torch

    like = step
    dtype = table_dtype(g)
    table = torch.stack([column(c, like).to(dtype) for c in columns], dim=1).contiguous()
    return table, int(table.data_ptr()), len(columns)


def lr_cast(x: Any, lr: Any) -> Any:
    """``x`` (a float64 vector) as it enters an expression with ``lr`` on the host path: as is
    for a number ``lr``; in ``lr``'s dtype for a tensor ``lr`` (torch casts a Python number
    operand to the tensor's dtype)."""
    if _buffers._is_torch_tensor(lr):
        return x.to(lr.dtype)
    return x


def lr_div(lr: Any, denominator: Any) -> Any:
    """``lr / denominator`` as the host path computes it (see :func:`lr_cast`)."""
    return lr / lr_cast(denominator, lr)


def group_zeros(g: Group) -> Any:
    """A float64 zero per tensor of ``g``, on its device (the shape of a table column)."""
    import torch

    device = "cpu" if g.device < 0 else f"cuda:{g.device}"
    return torch.zeros(len(g.indices), dtype=torch.float64, device=device)
