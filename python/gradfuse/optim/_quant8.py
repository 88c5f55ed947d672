"""Block-wise 8-bit optimizer state (issue 16): the scheme of Dettmers et al. 2022 ("8-bit
Optimizers via Block-wise Quantization") as bitsandbytes implements it.

A state tensor is stored as one ``uint8`` code per element plus one float32 ``absmax`` per block
of 256 elements (counted from the tensor's start, in memory order). A code indexes bitsandbytes'
dynamic (tree) quantization map (``bitsandbytes.functional.create_dynamic_map``): the signed map
for first moments (``exp_avg``, momentum buffers), the unsigned one for second moments
(``exp_avg_sq``, Adagrad's ``sum``, ...). A value is ``map[code] * absmax``; quantizing picks the
code nearest to ``x / absmax`` (ties: the lower code), computed rather than searched on the CPU
(``src/cpu/quant8.h``), by bisecting the thresholds on CUDA (the same codes). The optimizers
update 8-bit state in one fused pass: each block is dequantized, updated in float32, its new
absmax taken and requantized while it is in L1 (a warp's registers on CUDA).

Public helpers: :func:`quantize_blockwise`, :func:`dequantize_blockwise`, :func:`dynamic_map`,
:func:`dequantize_state_dict` (an 8-bit optimizer's ``state_dict`` as a float32 one that
``torch.optim`` loads) and :func:`load_bitsandbytes_state_dict`. Loading a float32 (torch)
checkpoint into an 8-bit optimizer is its ``load_state_dict``: the state is quantized there.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from gradfuse import _compile, _native

BLOCK = 256
ABSMAX_SUFFIX = "_absmax"  # state[p][key + ABSMAX_SUFFIX]: the absmax of the 8-bit state[p][key]

# Which map each state key of the gradfuse optimizers uses (True: signed): what their specs say
# (State.signed; tests/optim/test_8bit.py holds every 8-bit optimizer to this table), for
# dequantize_state_dict, which sees a checkpoint without its optimizer.
SIGNED_KEYS: dict[str, bool] = {
    "exp_avg": True,
    "exp_avg_slow": True,
    "exp_avg_sq": False,
    "max_exp_avg_sq": False,
    "exp_inf": False,
    "momentum_buffer": True,
    "sum": False,
    "square_avg": False,
    "grad_avg": True,
}


def blocks(numel: int) -> int:
    """The number of absmax values of an ``numel``-element tensor."""
    return -(-numel // BLOCK)


def dynamic_map(signed: bool = True) -> Tensor:
    """bitsandbytes' dynamic quantization map (256 sorted float32 values), built natively."""
    return torch.tensor(_native.core().dynamic_map(signed=bool(signed)), dtype=torch.float32)


def _check_tensor(x: Tensor, name: str, dtype: torch.dtype, device: torch.device | None) -> None:
    """``x`` is a ``dtype`` tensor on the CPU or a CUDA device (``device``, where given)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    on = x.device if device is None else device
    if x.dtype != dtype or on.type not in ("cpu", "cuda") or x.device != on:
        where = "a CPU or CUDA" if device is None else f"a {device}"
        raise TypeError(
            f"{name}: expected {where} tensor of dtype {dtype}, got shape {tuple(x.shape)}, dtype "
            f"{x.dtype}, device {x.device}"
        )


def quantize_blockwise(x: Tensor, signed: bool = True) -> tuple[Tensor, Tensor]:
    """``(codes, absmax)`` of a float32 tensor (CPU or CUDA; on its device): uint8 codes of
    ``x``'s shape and one float32 absmax per 256 elements, as ``bitsandbytes.functional.
    quantize_blockwise(x, code=create_dynamic_map(signed), blocksize=256)`` computes them (see
    tests/optim/test_8bit.py for the one place they differ: values below ~1e-4 of their block's
    absmax)."""
    _check_tensor(x, "quantize_blockwise: x", torch.float32, None)
    if _compile.is_compiling():  # dynamo cannot trace the native call: one opaque op instead
        _compile.require_op(_compile.QUANTIZE_OP, "quantize_blockwise")
        traced: tuple[Tensor, Tensor] = torch.ops.gradfuse.quantize_blockwise8(x.detach(), signed)
        return traced
    src = _in_memory_order(x.detach())
    codes = torch.empty_like(src, dtype=torch.uint8)  # in x's layout, as the optimizers keep it
    absmax = torch.empty(blocks(src.numel()), dtype=torch.float32, device=x.device)
    _blockwise8(True, src, codes, absmax, signed)
    return codes, absmax


def check_codes(codes: Any, absmax: Any, name: str, shape: torch.Size | None = None) -> None:
    """Raise a ValueError/TypeError naming ``name`` unless ``codes`` (uint8) and ``absmax``
    (float32, one finite non-negative value per 256 codes) form 8-bit state."""
    if not isinstance(codes, Tensor) or codes.dtype != torch.uint8:
        raise TypeError(f"{name}: expected uint8 codes, got {_describe(codes)}")
    if shape is not None and codes.shape != shape:
        raise ValueError(
            f"{name}: codes have shape {tuple(codes.shape)}, expected {tuple(shape)} (the param's)"
        )
    if not isinstance(absmax, Tensor) or absmax.dtype != torch.float32:
        raise TypeError(
            f"{name}{ABSMAX_SUFFIX}: expected a float32 tensor, got {_describe(absmax)}"
        )
    if absmax.numel() != blocks(codes.numel()) or absmax.dim() != 1:
        raise ValueError(
            f"{name}{ABSMAX_SUFFIX}: expected shape ({blocks(codes.numel())},) (one value per 256 "
            f"codes of {codes.numel()}), got {tuple(absmax.shape)}"
        )
    if absmax.numel() and not bool(torch.isfinite(absmax).all() and (absmax >= 0).all()):
        raise ValueError(f"{name}{ABSMAX_SUFFIX}: holds NaN, infinite or negative values")


def dequantize_blockwise(codes: Tensor, absmax: Tensor, signed: bool = True) -> Tensor:
    """The float32 values of 8-bit state: ``map[codes] * absmax`` per block of 256 (CPU or
    CUDA tensors, both on one device; the values on it)."""
    _check_tensor(codes, "dequantize_blockwise: codes", torch.uint8, None)
    _check_tensor(absmax, "dequantize_blockwise: absmax", torch.float32, codes.device)
    if absmax.numel() != blocks(codes.numel()):
        raise ValueError(
            f"dequantize_blockwise: absmax has {absmax.numel()} values, expected "
            f"{blocks(codes.numel())} (one per 256 codes of {codes.numel()})"
        )
    src = _in_memory_order(codes)
    amax = absmax.contiguous()
    out = torch.empty_like(src, dtype=torch.float32)
    _blockwise8(False, out, src, amax, signed)
    return out


def _in_memory_order(x: Tensor) -> Tensor:
    """``x`` itself where its elements fill one block of memory in some order of its dimensions
    (a transposed or channels-last tensor: its blocks of 256 are counted in that memory order,
    as the optimizers count them), else a row-major copy."""
    from gradfuse._buffers import _is_dense

    return x if _is_dense(x.shape, x.stride()) else x.contiguous()


def _blockwise8(
    quantize: bool, values: Tensor, codes: Tensor, absmax: Tensor, signed: bool
) -> None:
    """The native quantizer (``quantize``: ``values`` -> ``codes`` and ``absmax``) or
    dequantizer (the other way) over contiguous tensors of one device: float32 ``values``, their
    uint8 ``codes`` (as many), one float32 absmax per 256. CUDA tensors: on the device's current
    stream."""
    device, stream = -1, 0
    if codes.device.type == "cuda":
        device = codes.device.index if codes.device.index is not None else 0
        stream = int(torch.cuda.current_stream(device).cuda_stream)
    _native.core().blockwise8(
        values=values.data_ptr(),
        codes=codes.data_ptr(),
        absmax=absmax.data_ptr(),
        n=codes.numel(),
        absmax_len=absmax.numel(),
        signed=bool(signed),
        quantize=quantize,
        device=device,
        stream=stream,
    )


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"a tensor of shape {tuple(x.shape)}, dtype {x.dtype}, device {x.device}"
    return f"{type(x).__name__}"


def dequantize_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of an 8-bit optimizer's ``state_dict()`` with every 8-bit state tensor turned
    back into float32 (and the ``*_absmax`` entries dropped): what ``torch.optim`` loads."""
    out = copy.copy(state_dict)
    out["state"] = {}
    for pid, st in state_dict["state"].items():
        new: dict[str, Any] = {}
        for key, value in st.items():
            if key.endswith(ABSMAX_SUFFIX) and key.removesuffix(ABSMAX_SUFFIX) in st:
                continue
            absmax = st.get(key + ABSMAX_SUFFIX)
            if isinstance(value, Tensor) and value.dtype == torch.uint8 and absmax is not None:
                check_codes(value, absmax, f"state_dict: state {pid} {key}")
                signed = SIGNED_KEYS.get(key)
                if signed is None:
                    raise ValueError(f"state_dict: state {pid} {key}: unknown 8-bit state key")
                deq = dequantize_blockwise(value.cpu(), absmax.cpu(), signed)
                new[key] = deq.to(value.device)
            else:
                new[key] = value
        out["state"][pid] = new
    return out


def quantize_state(
    p: Tensor, state: dict[str, Any], keys: dict[str, bool], into: dict[str, Any] | None = None
) -> None:
    """Brings the float state tensors of ``p`` named in ``keys`` (key -> signed) to 8-bit, in
    the param's memory layout, in place of the dict entries (a float32 torch checkpoint, or a
    fresh float state), or as entries of ``into``."""
    out = state if into is None else into
    for key, signed in keys.items():
        value = state.get(key)
        if not isinstance(value, Tensor) or not value.is_floating_point():
            continue
        if value.shape != p.shape:
            raise ValueError(
                f"state {key}: shape {tuple(value.shape)} does not match the param's "
                f"{tuple(p.shape)}"
            )
        # In the param's layout: the kernels walk state and param in one memory order.
        src = torch.empty_like(p, dtype=torch.float32, device="cpu")
        src.copy_(value.detach())
        codes, absmax = quantize_blockwise(src, signed)
        out[key] = codes.to(p.device)
        out[key + ABSMAX_SUFFIX] = absmax.to(p.device)


# bitsandbytes' keys of a two-state (Adam) and one-state optimizer and gradfuse's.
_BNB_KEYS = {"state1": "exp_avg", "state2": "exp_avg_sq"}
_BNB_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay")
_BNB_PACKED = "__bnb_optimizer_quant_state__"


def load_bitsandbytes_state_dict(
    optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
) -> None:
    """Loads a ``bitsandbytes.optim.Adam8bit`` / ``AdamW8bit`` ``state_dict()`` (blockwise, the
    default) into a gradfuse Adam/AdamW optimizer (8-bit or not), params in the same order:
    ``state1``/``state2`` become ``exp_avg``/``exp_avg_sq`` with their ``absmax1``/``absmax2``;
    the groups' ``lr``, ``betas``, ``eps`` and ``weight_decay`` are taken over. Everything is
    checked before anything is loaded. bitsandbytes' ``Adam8bit`` decays the weights decoupled:
    load its checkpoint into an AdamW (``AdamW8bit``) to keep that."""
    signed = {"state1": True, "state2": False}
    maps = {True: dynamic_map(True), False: dynamic_map(False)}
    converted: dict[Any, dict[str, Any]] = {}
    for pid, raw in state_dict["state"].items():
        st = dict(raw)
        packed = st.pop(_BNB_PACKED, None)  # bitsandbytes packs its tensors in one dict
        if packed is not None:
            st.update(packed)
        new: dict[str, Any] = {}
        for bkey, key in _BNB_KEYS.items():
            if bkey not in st:
                raise ValueError(f"bitsandbytes state {pid}: missing {bkey!r}")
            value = st[bkey]
            if value.dtype == torch.uint8:
                n = bkey[-1]
                qmap = st.get(f"qmap{n}")
                if qmap is not None and not torch.equal(qmap.float().cpu(), maps[signed[bkey]]):
                    raise ValueError(
                        f"bitsandbytes state {pid}: qmap{n} is not the dynamic map "
                        f"(signed={signed[bkey]}); only blockwise dynamic quantization loads"
                    )
                check_codes(value, st.get(f"absmax{n}"), f"bitsandbytes state {pid} {bkey}")
                new[key] = value.clone()
                new[key + ABSMAX_SUFFIX] = st[f"absmax{n}"].clone()
            else:
                new[key] = value.clone()
        step = st.get("step", 0)
        new["step"] = torch.tensor(float(step.item() if isinstance(step, Tensor) else step))
        converted[pid] = new
    own = optimizer.state_dict()
    if len(own["param_groups"]) != len(state_dict["param_groups"]):
        raise ValueError(
            f"bitsandbytes state_dict has {len(state_dict['param_groups'])} param groups, the "
            f"optimizer {len(own['param_groups'])}"
        )
    groups = []
    for mine, theirs in zip(own["param_groups"], state_dict["param_groups"], strict=True):
        if len(mine["params"]) != len(theirs["params"]):
            raise ValueError(
                f"bitsandbytes param group has {len(theirs['params'])} params, the optimizer's "
                f"{len(mine['params'])}"
            )
        g = dict(mine)
        for k in _BNB_GROUP_KEYS:
            if k in theirs:
                g[k] = tuple(theirs[k]) if k == "betas" else theirs[k]
        groups.append((g, dict(zip(theirs["params"], mine["params"], strict=True))))
    state = {ids[pid]: s for g, ids in groups for pid, s in converted.items() if pid in ids}
    optimizer.load_state_dict({"state": state, "param_groups": [g for g, _ in groups]})


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of tensor state (codes, absmax, float state, counters) an optimizer holds."""
    return sum(
        v.numel() * v.element_size()
        for st in optimizer.state.values()
        for v in st.values()
        if isinstance(v, Tensor)
    )


__all__ = [
    "dequantize_blockwise",
    "dequantize_state_dict",
    "dynamic_map",
    "load_bitsandbytes_state_dict",
    "quantize_blockwise",
    "state_bytes",
]
