"""Per-parameter scalar counters (``step``, NAdam's ``mu_product``) and the AMP skip decision.

torch keeps each parameter's ``step`` as a 0-dim tensor that the update increments in place
and then reads on the host (``_get_value``) to compute bias corrections. The functional layer
accepts the same tensors, 0-dim numpy arrays (updated in place too), or plain numbers in a
mutable list (the entry is replaced).
"""

from __future__ import annotations

from collections.abc import MutableSequence, Sequence
from typing import Any

from gradfuse import _buffers


def check_counters(op: str, name: str, counters: Sequence[Any], n: int, params_name: str) -> None:
    """Every entry is a number or a 1-element tensor/array; one entry per param."""
    if len(counters) != n:
        raise ValueError(
            f"{op}: expected one entry of {name} per entry of {params_name}, got "
            f"{len(counters)} {name} for {n} {params_name}"
        )
    if _plain_tensors(counters) and all(c.numel() == 1 for c in counters):
        return  # the optimizers' case: one 0-dim torch tensor per param
    for i, c in enumerate(counters):
        if isinstance(c, bool) or not (
            isinstance(c, (int, float)) or (_is_array(c) and _numel(c) == 1)
        ):
            raise TypeError(
                f"{op}: {name}[{i}] must be a number or a 1-element tensor/array, got "
                f"{_buffers.describe(c)}"
            )
    if any(not _is_array(c) for c in counters) and not isinstance(counters, MutableSequence):
        raise TypeError(
            f"{op}: {name} holds plain numbers, so it must be a mutable sequence (a list) to "
            f"be updated in place"
        )
    for i, c in enumerate(counters):
        # Checked now: the counters are advanced one by one, after every other check.
        if type(c).__name__ == "ndarray" and not c.flags.writeable:
            raise ValueError(
                f"{op}: {name}[{i}] is a read-only numpy array (shape {c.shape}, dtype "
                f"{c.dtype}); counters are advanced in place"
            )


def _plain_tensors(counters: Sequence[Any]) -> bool:
    """Every entry is a plain torch.Tensor (a type check per entry, no attribute lookups)."""
    plain = _buffers._plain_tensor_types  # filled by the first tensor the buffers path sees
    return bool(plain) and all(type(c) in plain for c in counters)


def all_tensors(counters: Sequence[Any]) -> bool:
    """Every entry is a torch tensor (plain ones are recognised by their type alone)."""
    return _plain_tensors(counters) or all(_buffers._is_torch_tensor(c) for c in counters)


def _is_array(x: Any) -> bool:
    return _buffers._is_torch_tensor(x) or type(x).__name__ == "ndarray"


def _numel(x: Any) -> int:
    n = x.numel() if _buffers._is_torch_tensor(x) else x.size
    return int(n)


def value(x: Any) -> float:
    """The host value of a counter (torch's ``_get_value``: a device sync for CUDA tensors)."""
    if _is_array(x):
        return float(x.item())
    return float(x)


def increment(counters: MutableSequence[Any] | Sequence[Any], i: int) -> float:
    """``counters[i] += 1`` in place, as torch's ``step_t += 1``; returns the new value."""
    c = counters[i]
    if _is_array(c):
        c += 1
        return value(c)
    assert isinstance(counters, MutableSequence)
    counters[i] = c + 1
    return float(counters[i])


def increment_all(counters: MutableSequence[Any] | Sequence[Any]) -> list[float]:
    """:func:`increment` for every entry; returns the new values.

    When every counter is a torch tensor (the optimizers' case), this is one ``_foreach_add_``
    and, when they also share a dtype, device and shape, one host read for the whole list (a
    single device sync for capturable CUDA steps) instead of a tensor op and a read per
    parameter.
    """
    if counters and all_tensors(counters):
        import torch

        from gradfuse._native import core

        values = core().increment_counters(
            counters if isinstance(counters, list) else list(counters)
        )
        if values is not None:  # CPU counters (the usual ones): advanced natively, read as is
            return values  # type: ignore[no-any-return]
        tensors = list(counters)
        torch._foreach_add_(tensors, 1)
        dtype = tensors[0].dtype
        if all(c.dtype == dtype for c in tensors):  # stacking mixed dtypes could round counts
            try:
                return [float(v) for v in torch.stack(tensors).reshape(-1).tolist()]
            except RuntimeError:  # several devices or shapes
                pass
        return [value(c) for c in tensors]
    return [increment(counters, i) for i in range(len(counters))]


def multiply(counters: MutableSequence[Any] | Sequence[Any], i: int, factor: float) -> float:
    """``counters[i] *= factor`` in place (NAdam's ``mu_product *= mu``); returns the new value.

    A float32 tensor keeps torch's rounding: the product is rounded to float32, and the value
    read back is that float32 number, exactly what torch's NAdam uses next.
    """
    c = counters[i]
    if _is_array(c):
        c *= factor
        return value(c)
    assert isinstance(counters, MutableSequence)
    counters[i] = c * factor
    return float(counters[i])


def advance(counters: MutableSequence[Any] | Sequence[Any], found_inf: Any) -> None:
    """``step += 1`` for every counter, then ``step -= found_inf`` (torch's fused optimizers'
    order), with no host read of ``found_inf`` when the counters are tensors: a step that AMP
    skips leaves every counter as it was. Used where the update itself does not need the
    counters' values (capturable steps, RMSprop); plain-number counters read ``found_inf``."""
    if not counters:
        return
    if not all_tensors(counters) or (
        found_inf is not None and not _buffers._is_torch_tensor(found_inf)
    ):
        if not found_inf_is_set(found_inf):
            for i in range(len(counters)):
                increment(counters, i)
        return
    import torch

    steps = list(counters)
    torch._foreach_add_(steps, 1)
    if found_inf is not None:
        fi = found_inf.reshape(())
        torch._foreach_sub_(steps, [fi.to(device=s.device, dtype=s.dtype) for s in steps])


def found_inf_is_set(found_inf: Any) -> bool:
    """Whether AMP found an inf/NaN gradient (read on the host: a device sync for CUDA).

    Optimizers that count steps need the answer before they compute the step's bias
    corrections, so a skipped step leaves every counter untouched.
    """
    return found_inf is not None and value(found_inf) != 0.0
