"""The precision policies of every gradfuse optimizer (keyword-only, all off by default, so the
optimizer stays a drop-in for torch's):

- ``master_weights=True``: each float16/bfloat16 param gets a float32 copy in its state
  (``state[p]["master_param"]``, saved in and restored from ``state_dict``). The update reads and
  writes the copy in float32 and rounds it into the param in the same pass. float32/float64
  params are updated as usual (a documented no-op for them). A state without the copy (a torch
  checkpoint) starts it from the param. The param must not be changed outside the optimizer
  while master weights are on (the copy would not see it).
- ``state_dtype=None | torch.float32 | torch.bfloat16 | torch.uint8 | "8bit"``: the dtype the
  state tensors (``exp_avg``, ``momentum_buffer``, ...) are kept in; None is torch's rule (the
  param's dtype). float32 state needs float16/bfloat16 params, bfloat16 state float32 params (or
  bfloat16 ones, where it is the default). Computed in float32 either way. ``torch.uint8`` (or
  ``"8bit"``, the same): block-wise 8-bit state as bitsandbytes keeps it (params of float32,
  float16 or bfloat16, CPU or CUDA; :mod:`gradfuse.optim._quant8`): each state tensor of a param with at
  least ``min_8bit_size`` elements (default 4096, as bitsandbytes) is uint8 codes plus
  ``state[p][key + "_absmax"]`` (float32, one per 256 elements); smaller params keep float32
  state.
- ``rounding="stochastic"`` (bfloat16 params, no master weights): the new param is rounded up or
  down at random, with probability given by its distance to each neighbour, so tiny updates
  survive on average. The bits come from a counter-based hash of (seed, call, tensor, element):
  the same on CPU and CUDA and for any thread count. The seed is drawn from torch's default
  generator when the optimizer is built (``torch.manual_seed`` makes runs reproducible) and
  travels in ``state_dict()["gradfuse_low_precision"]`` with the call counter.
- ``kahan=True`` (bfloat16 params, no master weights, nearest rounding): a bfloat16 compensation
  buffer per param (``state[p]["kahan_comp"]``) keeps what rounding dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

STATE_DICT_KEY = "gradfuse_low_precision"  # the state_dict entry of the rounding seed and counter
_NO_CAST_KEYS = ("step", "mu_product")
_EXTRA_KEYS = ("master_param", "kahan_comp")
MIN_8BIT_SIZE = 4096  # bitsandbytes' default: smaller params keep float32 state


@dataclass
class PrecisionPolicy:
    """One optimizer's precision options, checked, and what they need per param and per step."""

    master_weights: bool = False
    state_dtype: Any = None
    rounding: str = "nearest"
    kahan: bool = False
    seed: int = 0  # stochastic rounding: the optimizer's seed and how many calls drew from it
    calls: int = 0
    min_8bit_size: int = MIN_8BIT_SIZE  # 8-bit state: params with fewer elements keep float32
    signed_keys: dict[str, bool] | None = None  # 8-bit state: state key -> signed map (the spec's)

    @classmethod
    def create(
        cls, name: str, master_weights: bool, state_dtype: Any, rounding: str, kahan: bool
    ) -> PrecisionPolicy:
        if isinstance(state_dtype, str) and state_dtype == "8bit":
            state_dtype = torch.uint8
        if state_dtype not in (None, torch.float32, torch.bfloat16, torch.uint8):
            raise ValueError(
                f"{name}: state_dtype must be None, torch.float32, torch.bfloat16 or torch.uint8 "
                f'("8bit": block-wise 8-bit state), got {state_dtype!r}'
            )
        if rounding not in ("nearest", "stochastic"):
            raise ValueError(
                f"{name}: rounding must be 'nearest' or 'stochastic', got {rounding!r}"
            )
        master_weights, kahan = bool(master_weights), bool(kahan)
        chosen = [
            n
            for n, on in (
                ("master_weights=True", master_weights),
                ("kahan=True", kahan),
                ("rounding='stochastic'", rounding == "stochastic"),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"{name}: {' and '.join(chosen)} cannot be combined; pick one (master weights, "
                f"Kahan compensation or stochastic rounding)"
            )
        seed = int(torch.randint(0, 2**62, ()).item()) if rounding == "stochastic" else 0
        return cls(master_weights, state_dtype, rounding, kahan, seed)

    @property
    def q8(self) -> bool:
        """Block-wise 8-bit state (``state_dtype=torch.uint8``)."""
        return self.state_dtype is torch.uint8

    def is_8bit(self, p: Tensor) -> bool:
        """Whether ``p``'s state is 8-bit (8-bit state and ``p`` not below min_8bit_size)."""
        return self.q8 and p.numel() >= self.min_8bit_size

    @property
    def changes_state(self) -> bool:
        """Whether a param's state needs :meth:`prepare_state` (extra tensors, another dtype)."""
        return self.master_weights or self.kahan or self.state_dtype is not None

    def check_param(self, name: str, p: Tensor, i: int) -> None:
        what = f"{name}: param {i} (shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"
        if (self.kahan or self.rounding == "stochastic") and p.dtype != torch.bfloat16:
            option = "kahan=True" if self.kahan else "rounding='stochastic'"
            raise ValueError(f"{what}: {option} needs bfloat16 params")
        sd = self.state_dtype
        if self.q8:
            from gradfuse._buffers import _is_dtensor

            if _is_dtensor(p):  # the blocks of a shard, checkpoints of codes per shard: not yet
                raise NotImplementedError(
                    f"{what}: a DTensor (placements {tuple(p.placements)}); 8-bit state "  # type: ignore[attr-defined]
                    f"(state_dtype=torch.uint8) is not supported for DTensor (FSDP2, tensor "
                    f"parallel) params yet"
                )
            if p.dtype not in (
                torch.float32,
                torch.float16,
                torch.bfloat16,
            ) or p.device.type not in (
                "cpu",
                "cuda",
            ):
                raise ValueError(
                    f"{what}: state_dtype=torch.uint8 (8-bit state) needs float32, float16 or "
                    f"bfloat16 params on the CPU or a CUDA device"
                )
            return
        if sd is not None and sd != p.dtype:
            ok = (p.dtype in (torch.float16, torch.bfloat16) and sd == torch.float32) or (
                p.dtype == torch.float32 and sd == torch.bfloat16
            )
            if not ok:
                raise ValueError(
                    f"{what}: state_dtype={sd} is not available for it (float32 state for "
                    f"float16/bfloat16 params, bfloat16 state for float32 params)"
                )

    def dtype_for(self, p: Tensor) -> Any:
        if self.q8:
            if self.is_8bit(p):
                return torch.uint8
            return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
        return p.dtype if self.state_dtype is None else self.state_dtype

    def full(self, p: Tensor, value: complex) -> Tensor:
        """A state tensor for ``p`` filled with ``value``: its layout, the state dtype (8-bit
        state: float32 here, quantized by :meth:`prepare_state`)."""
        dtype = self.dtype_for(p)
        return torch.full_like(
            p,
            value,
            dtype=torch.float32 if dtype is torch.uint8 else dtype,
            memory_format=torch.preserve_format,
        )

    def prepare_state(self, p: Tensor, state: dict[str, Any]) -> None:
        """Bring one param's state to the policy: master copy / compensation present, state
        tensors in the state dtype (a torch checkpoint keeps them in the param's)."""
        if (
            self.master_weights
            and p.dtype in (torch.float16, torch.bfloat16)
            and "master_param" not in state
        ):
            master = torch.empty_like(p, dtype=torch.float32)
            master.copy_(p.detach())
            state["master_param"] = master
        if self.kahan and "kahan_comp" not in state:
            state["kahan_comp"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if self.q8:
            self._prepare_8bit(p, state)
        elif self.state_dtype is not None:
            for key, value in state.items():
                if (
                    key in _NO_CAST_KEYS
                    or key in _EXTRA_KEYS
                    or not torch.is_tensor(value)
                    or value.shape != p.shape
                    or not value.is_floating_point()
                    or value.dtype == self.state_dtype
                ):
                    continue
                state[key] = value.to(self.state_dtype)

    def _prepare_8bit(self, p: Tensor, state: dict[str, Any]) -> None:
        """8-bit params: float state (a torch checkpoint) quantized, absmax present (zero for
        fresh zero codes); other params: float state in float32 for 16-bit params."""
        from gradfuse.optim import _quant8

        keys = self.signed_keys or {}
        if self.is_8bit(p):
            _quant8.quantize_state(p, state, keys)
            for key in keys:
                value = state.get(key)
                absmax_key = key + _quant8.ABSMAX_SUFFIX
                if (
                    isinstance(value, Tensor)
                    and value.dtype == torch.uint8
                    and absmax_key not in state
                ):
                    state[absmax_key] = torch.zeros(
                        _quant8.blocks(p.numel()), dtype=torch.float32, device=p.device
                    )
            return
        want = self.dtype_for(p)
        for key in keys:
            value = state.get(key)
            if isinstance(value, Tensor) and value.dtype == torch.uint8:
                absmax = state.pop(key + _quant8.ABSMAX_SUFFIX, None)
                _quant8.check_codes(value, absmax, f"state {key}", p.shape)
                value = _quant8.dequantize_blockwise(value.cpu(), absmax.cpu(), keys[key])
                state[key] = value.to(p.device, want)
            elif isinstance(value, Tensor) and value.is_floating_point() and value.dtype != want:
                state[key] = value.to(want)

    def relayout(self, p: Tensor, state: dict[str, Any]) -> list[tuple[dict[str, Any], str, Any]]:
        """Puts every state tensor of ``p``'s shape in ``p``'s memory layout (the kernels walk a
        param and its state in one memory order); returns (state, key, previous value) of every
        entry it replaced (8-bit: the absmax too). State keeps its layout
        where the param's changed since: a checkpoint saved before the model went channels-last,
        a model re-laid mid-run (``model.to(memory_format=...)``). 8-bit state is dequantized in
        its own memory order and quantized again in the param's (its blocks change)."""
        from gradfuse._buffers import _is_dense
        from gradfuse.optim import _quant8

        stride = p.stride()
        if not _is_dense(p.shape, stride):
            return []  # the update refuses the param itself
        replaced: list[tuple[dict[str, Any], str, Any]] = []
        for key, value in list(state.items()):
            if (
                not isinstance(value, Tensor)
                or value.shape != p.shape
                or value.stride() == stride
                or key.endswith(_quant8.ABSMAX_SUFFIX)
            ):
                continue
            absmax_key = key + _quant8.ABSMAX_SUFFIX
            replaced.append((state, key, value))
            if value.dtype == torch.uint8 and absmax_key in state:
                replaced.append((state, absmax_key, state[absmax_key]))
                signed = (self.signed_keys or _quant8.SIGNED_KEYS)[key]
                values = _quant8.dequantize_blockwise(value.cpu(), state[absmax_key].cpu(), signed)
                _quant8.quantize_state(p, {key: values}, {key: signed}, into=state)
            else:
                relaid = torch.empty_like(p, dtype=value.dtype)
                relaid.copy_(value)
                state[key] = relaid
        return replaced

    def kwargs(
        self, name: str, state: Any, params: list[Tensor], keys: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """The functional's low-precision keyword arguments for one group's ``params``
        (``keys``: the state keys of the call's state lists, in order, for 8-bit state)."""
        if not (self.changes_state or self.rounding != "nearest"):
            return {}
        # No refusal under torch.compile: these lists (None entries, 8-bit absmax lists nested
        # per state list) are recorded into gradfuse's custom op like any other (_compile.py).
        kwargs: dict[str, Any] = {}
        if self.master_weights:
            kwargs["master_params"] = [
                state[p]["master_param"] if p.dtype in (torch.float16, torch.bfloat16) else None
                for p in params
            ]
        if self.kahan:
            kwargs["kahan_comps"] = [state[p]["kahan_comp"] for p in params]
        if self.q8:
            kwargs["state_absmax"] = [
                [state[p].get(key + "_absmax") for p in params] for key in keys
            ]
        if self.rounding == "stochastic":
            from gradfuse.functional._multi_tensor import mix_seed

            kwargs["rounding"] = "stochastic"
            kwargs["seed"] = mix_seed(self.seed, self.calls)
            self.calls += 1
        return kwargs

    def save(self, sd: dict[str, Any]) -> None:
        """Adds the stochastic-rounding seed and counter to a ``state_dict()``."""
        if self.rounding == "stochastic":
            sd[STATE_DICT_KEY] = {"seed": self.seed, "calls": self.calls}

    def check_saved(
        self, name: str, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]
    ) -> None:
        """Before torch's ``load_state_dict``: every 8-bit state tensor of ``state_dict`` is
        uint8 codes of its param's shape with a finite, non-negative float32 absmax of the
        right size (nothing is loaded otherwise)."""
        from gradfuse.optim import _quant8

        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if len(ids) != len(params):
            return  # torch's own message
        for pid, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            for key, value in saved.items():
                if not (isinstance(value, Tensor) and value.dtype == torch.uint8):
                    continue
                where = f"{name}.load_state_dict: state of param {pid}: {key}"
                _quant8.check_codes(value, saved.get(key + _quant8.ABSMAX_SUFFIX), where, p.shape)

    def load(self, optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> None:
        """After torch's ``load_state_dict``, which casts every floating state tensor to its
        param's dtype: puts back the saved precision of the master copies and of state kept in
        another dtype, and the rounding seed."""
        saved_groups = state_dict["param_groups"]
        ids = [i for g in saved_groups for i in g["params"]]
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for pid, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            current = optimizer.state[p]
            for key, value in saved.items():
                if key in _NO_CAST_KEYS or not torch.is_tensor(value):
                    continue
                if value.dtype == torch.uint8:  # 8-bit codes, which torch cast to the param's dtype
                    current[key] = value.to(device=p.device, copy=True)
                    continue
                if not value.is_floating_point() or value.dtype == current[key].dtype:
                    continue
                if (
                    key == "master_param"
                    or (self.state_dtype is not None and value.dtype == self.state_dtype)
                    or key.endswith("_absmax")
                    # 8-bit state: the float32 state of 16-bit params below min_8bit_size
                    or (self.q8 and value.dtype == self.dtype_for(p))
                ):
                    current[key] = value.to(device=p.device, copy=True)
            if self.q8 or any(
                isinstance(v, Tensor) and v.dtype == torch.uint8 for v in current.values()
            ):
                self._prepare_8bit(p, current)  # 8-bit: float state quantized; else dequantized
        extra = state_dict.get(STATE_DICT_KEY)
        if extra is not None and self.rounding == "stochastic":
            self.seed = int(extra["seed"])
            self.calls = int(extra["calls"])
