# Hand-written stub of the native module (src/bindings/). Private: use the gradfuse package.
from collections.abc import Sequence
from typing import Any, overload

# Integer codes of the native interface by name (src/bindings/module.cpp): "dtype",
# "weight_decay_mode", "param_policy", "norm_kind", "step_fields" (step-table row width of
# each kernel that takes a step table), and "hyper_fields" (each optimizer kernel's
# hyperparameter names in the order optimizer_step takes them).
CODES: dict[str, dict[str, Any]]

def build_info() -> dict[str, Any]: ...
def cpu_isa() -> str: ...
def cpu_isas() -> str: ...
def set_cpu_isa(isa: str) -> None: ...
def cpu_engine_isa() -> str: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def cuda_device_count() -> int: ...
def cuda_device_description(device: int) -> str: ...
def cuda_driver_version() -> int: ...
def optimizer_step(
    kernel: str,
    slots: list[list[int]] | PreparedList,
    numels: list[int] | None,
    dtype: int,
    device: int,
    stream: int,
    hyper: list[float],
    modes: dict[str, float],
    *,
    grad_scale: int = 0,
    found_inf: int = 0,
    clip_coef: int = 0,
    step_table: int = 0,
    step_table_stride: int = 0,
    rows: list[int] | None = None,
    cols: list[int] | None = None,
    state_dtype: int = -1,
    policy: int = 0,
    seed: int = 0,
) -> None: ...
def cross_entropy(
    *,
    input: int,
    target: int,
    weight: int,
    grad: int,
    loss: int,
    outer: int,
    classes: int,
    inner: int,
    dtype: int,
    device: int,
    stream: int,
    reduction: int,
    ignore_index: int,
    label_smoothing: float,
    prob_target: bool,
) -> None: ...
def elementwise_loss(
    kind: int,
    dtype: int,
    device: int,
    stream: int,
    numel: int,
    *,
    input: int,
    target: int,
    weight: int,
    pos_weight: int,
    grad: int,
    loss: int,
    reduction: int,
    divisor: float,
    param: float,
    log_target: bool,
) -> None: ...
def fastmath_eval(
    fn: int,
    dtype: int,
    device: int,
    stream: int,
    numel: int,
    x: int,
    y: int,
) -> None: ...
def grad_norm(
    slots: list[list[int]],
    numels: list[int],
    dtype: int,
    device: int,
    stream: int,
    *,
    kind: int,
    p: float,
    out: int,
) -> None: ...

nll_loss = cross_entropy  # the same arguments (one native driver, src/bindings)

def scale_grads(
    slots: list[list[int]],
    numels: list[int],
    dtype: int,
    device: int,
    stream: int,
    *,
    grad_scale: int = 0,
    found_inf: int = 0,
    clip_coef: int = 0,
) -> None: ...
def register_plain_types(
    buffer: type, tensor: type, parameter: type, dtypes: dict[Any, tuple[str, int]]
) -> None: ...

class PreparedList(Sequence[Any]):
    """The tensors of a call that passed prepare_plain's checks (slot-major Buffers)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None: ...  # raises: made by prepare_plain
    @property
    def depth(self) -> int: ...
    @property
    def n(self) -> int: ...
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, k: int) -> Any: ...
    @overload
    def __getitem__(self, k: slice) -> list[Any]: ...
    def pointer_lists(self, depth: int) -> tuple[list[list[int]], list[int]]: ...
    def none_in(self, start: int, stop: int) -> bool: ...
    def uniform(self) -> tuple[int, int] | None: ...

def prepare_plain(slots: list[Any], written: list[bool]) -> PreparedList | None: ...
def gather_state(
    params: Any, state: Any, keys: tuple[str, ...], counter_keys: tuple[str, ...]
) -> tuple[list[Any], list[Any], tuple[list[Any], ...], tuple[list[Any], ...]] | None: ...
def increment_counters(counters: list[Any]) -> list[float] | None: ...
def use_dlpack(enabled: bool) -> bool: ...

# Block-wise 8-bit quantization (cpu/quant8.h): n float32 values <-> uint8 codes and one float32
# absmax per 256 values, host memory, addresses as ints.
def blockwise8(
    values: int,
    codes: int,
    absmax: int,
    n: int,
    absmax_len: int,
    signed: bool,
    quantize: bool,
    device: int = -1,
    stream: int = 0,
) -> None: ...
def dynamic_map(signed: bool) -> list[float]: ...
def q8_self_test(
    values: int, codes: int, forced: int, n: int, signed: bool, damage: int
) -> tuple[bool, bool]: ...
def state_q8_code() -> int: ...
