"""``_core.CODES``: the integer codes of the native interface, checked against what the kernels
do with them (a code that named the wrong C++ enumerator would change a result here)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from gradfuse import _core
from tolerances import NORM, assert_close

CODES = _core.CODES
_HOST = -1  # device index of host memory


def _list(*tensors: torch.Tensor) -> tuple[list[list[int]], list[int]]:
    return [[t.data_ptr()] for t in tensors], [tensors[0].numel()]


def test_codes_name_every_enumerator() -> None:
    assert set(CODES["dtype"]) == {"float32", "float64", "float16", "bfloat16"}
    assert set(CODES["weight_decay_mode"]) == {"none", "l2", "decoupled"}
    assert set(CODES["param_policy"]) == {"nearest", "stochastic", "kahan", "master"}
    assert set(CODES["norm_kind"]) == {"l2", "l1", "inf", "neg_inf", "zero", "p"}
    for table in ("dtype", "weight_decay_mode", "param_policy", "norm_kind"):
        values = list(CODES[table].values())
        assert len(set(values)) == len(values), table


_ORDERS = {"l2": 2.0, "l1": 1.0, "inf": math.inf, "neg_inf": -math.inf, "zero": 0.0, "p": 3.0}


@pytest.mark.parametrize("dtype_name", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", sorted(_ORDERS))
def test_dtype_and_norm_kind_codes(dtype_name: str, kind: str) -> None:
    # grad_norm reads the tensor as the dtype its code names and reduces it by the kind its
    # code names: both must agree with torch. The buffer is 16 elements of which 4 are passed,
    # so reading them as a wider type would stay inside it (and give other values).
    dtype = getattr(torch, dtype_name)
    buf = torch.zeros(16, dtype=dtype)
    x = torch.tensor([1.5, -2.25, 3.0, 0.5], dtype=dtype)
    buf[:4] = x
    out = torch.zeros(2, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    slots, _ = _list(buf)
    _core.grad_norm(
        slots,
        [4],
        CODES["dtype"][dtype_name],
        _HOST,
        0,
        kind=CODES["norm_kind"][kind],
        p=_ORDERS[kind],
        out=out.data_ptr(),
    )
    expected = torch.linalg.vector_norm(x.to(out.dtype), ord=_ORDERS[kind])
    assert_close(out[0], expected, NORM[dtype])
    # The total is the norm of the per-tensor norms (for ord 0: the count of nonzero norms).
    total = torch.linalg.vector_norm(expected.reshape(1), ord=_ORDERS[kind])
    assert_close(out[1], total, NORM[dtype])


def _adam(p: torch.Tensor, g: torch.Tensor, mode: str, weight_decay: float) -> torch.Tensor:
    """One float64 Adam step of the native kernel with weight decay mode `mode`."""
    p = p.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    lr, beta1, beta2 = 0.1, 0.9, 0.999
    slots = [[t.data_ptr()] for t in (p, g, m, v)]
    hyper = {
        "weight_decay": weight_decay,
        "lr_decay": 1.0 - lr * weight_decay,
        "exp_avg_weight": 1.0 - beta1,
        "beta2": beta2,
        "one_minus_beta2": 1.0 - beta2,
        "bias_correction2_sqrt": (1.0 - beta2) ** 0.5,
        "neg_step_size": -(lr / (1.0 - beta1)),
        "eps": 1e-8,
    }
    _core.optimizer_step(
        "adam",
        slots,
        [p.numel()],
        CODES["dtype"]["float64"],
        _HOST,
        0,
        [hyper[name] for name in CODES["hyper_fields"]["adam"]],
        {"weight_decay_mode": CODES["weight_decay_mode"][mode], "amsgrad": 0, "maximize": 0},
    )
    return p


def test_weight_decay_mode_codes() -> None:
    # L2 adds wd * p to the gradient and decoupled multiplies p by 1 - lr * wd before the rest of
    # the rule: both are the "none" rule applied to those inputs, bit for bit.
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(64, dtype=torch.float64, generator=gen)
    g = torch.randn(64, dtype=torch.float64, generator=gen)
    wd = 0.25
    assert torch.equal(_adam(p, g, "l2", wd), _adam(p, g + wd * p, "none", wd))
    assert torch.equal(_adam(p, g, "decoupled", wd), _adam(p * (1.0 - 0.1 * wd), g, "none", wd))
    assert not torch.equal(_adam(p, g, "none", wd), _adam(p, g, "l2", wd))


def _sgd(tensors: list[torch.Tensor], dtype_name: str, **options: Any) -> None:
    """One plain SGD step (lr 0.01) of the native kernel over one tensor's slots."""
    _core.optimizer_step(
        "sgd",
        [[t.data_ptr()] for t in tensors],
        [tensors[0].numel()],
        CODES["dtype"][dtype_name],
        _HOST,
        0,
        [0.01, 0.0, 0.0, 0.0],  # lr, momentum, dampening, weight_decay
        {"nesterov": 0, "maximize": 0, "first_step": 0},
        **options,
    )


def _sgd_bf16(policy: str, extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One plain SGD step (lr 0.01) of bfloat16 params with param policy `policy`."""
    gen = torch.Generator().manual_seed(1)
    p = (torch.randn(4096, generator=gen) * 3).to(torch.bfloat16)
    g = torch.randn(4096, generator=gen).to(torch.bfloat16)
    before = p.clone()
    _sgd(
        [p, g] if extra is None else [p, g, extra],
        "bfloat16",
        policy=CODES["param_policy"][policy],
        seed=7,
    )
    # The rule in float32: p - lr * g, lr narrowed to float32 once.
    exact = before.float() - torch.tensor(0.01, dtype=torch.float32) * g.float()
    return p, exact


def test_param_policy_codes() -> None:
    p, exact = _sgd_bf16("nearest", None)
    assert torch.equal(p, exact.to(torch.bfloat16))

    master = (
        (torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3)
        .to(torch.bfloat16)
        .float()
    )
    p, exact = _sgd_bf16("master", master)
    assert torch.equal(master, exact)  # the float32 master is updated ...
    assert torch.equal(p, exact.to(torch.bfloat16))  # ... and the param is its rounding

    comp = torch.zeros(4096, dtype=torch.bfloat16)
    p, exact = _sgd_bf16("kahan", comp)
    old = (torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3).to(torch.bfloat16)
    y = exact - old.float()  # (p_new - p_old) + c, with c = 0
    assert torch.equal(p, (old.float() + y).to(torch.bfloat16))
    assert torch.equal(comp, (y - (p.float() - old.float())).to(torch.bfloat16))
    assert comp.count_nonzero() > 0

    p, exact = _sgd_bf16("stochastic", None)
    # Each value is one of the two bfloat16 neighbours of the float32 result (its top 16 bits,
    # or those plus one unit), and not always the nearest one.
    bits = p.view(torch.int16).to(torch.int32) & 0xFFFF
    truncated = (exact.view(torch.int32) >> 16) & 0xFFFF
    assert bool(((bits == truncated) | (bits == truncated + 1)).all())
    assert not torch.equal(p, exact.to(torch.bfloat16))


def test_step_fields_match_the_binding_checks() -> None:
    # The field counts are the ones the bindings check: SGD refuses a step table narrower than
    # its count, and reads its lr from one exactly that wide.
    fields = CODES["step_fields"]
    assert set(fields) == {"sgd", "adam", "adamax", "nadam", "radam", "adagrad", "rmsprop"}
    assert fields["adam"] == 3
    assert fields["radam"] == 6
    assert min(fields.values()) >= 1
    table = torch.zeros(8, dtype=torch.float32)
    p = torch.zeros(1, dtype=torch.float32)
    g = torch.ones(1, dtype=torch.float32)
    with pytest.raises(ValueError, match="step_table rows need at least"):
        _sgd([p, g], "float32", step_table=table.data_ptr(), step_table_stride=fields["sgd"] - 1)
    table[0] = 0.5
    _sgd([p, g], "float32", step_table=table.data_ptr(), step_table_stride=fields["sgd"])
    assert p.item() == -0.5  # the table's lr, not the argument's


def test_hyper_fields_name_each_kernels_scalars() -> None:
    # optimizer_step takes the hyperparameters in this order: a kernel's list is its Hyper
    # struct's fields, so SGD's lr is first (a swapped order would move p by another value).
    fields = CODES["hyper_fields"]
    assert set(fields) >= {"sgd", "adam", "adamax", "nadam", "radam", "adagrad", "rmsprop", "lion"}
    assert fields["sgd"] == ["lr", "momentum", "dampening", "weight_decay"]
    p = torch.zeros(1, dtype=torch.float32)
    g = torch.ones(1, dtype=torch.float32)
    _sgd([p, g], "float32")
    assert p.item() == pytest.approx(-0.01)


def test_optimizer_step_refuses_a_malformed_call() -> None:
    p = torch.randn(3)
    g = torch.randn(3)
    before = p.clone()
    slots, numels = _list(p, g)
    args = (slots, numels, CODES["dtype"]["float32"], _HOST, 0)
    flags = {"nesterov": 0, "maximize": 0, "first_step": 0}
    with pytest.raises(ValueError, match="unknown kernel 'nope'"):
        _core.optimizer_step("nope", *args, [0.1, 0.0, 0.0, 0.0], flags)
    with pytest.raises(ValueError, match="sgd: expected 4 hyperparameters"):
        _core.optimizer_step("sgd", *args, [0.1, 0.0], flags)
    with pytest.raises(ValueError, match="sgd: missing mode 'first_step'"):
        _core.optimizer_step("sgd", *args, [0.1, 0.0, 0.0, 0.0], {"nesterov": 0, "maximize": 0})
    with pytest.raises(ValueError, match="sgd: expected 3 pointer lists"):
        _core.optimizer_step("sgd", *args, [0.1, 0.9, 0.0, 0.0], flags)
    assert torch.equal(p, before)


# The kernels whose per-step scalars can come per tensor from a step table (capturable steps, a
# tensor lr): every other kernel refuses a table, before it reads anything else of the call.
_STEP_TABLE_KERNELS = {"sgd", "adam", "adamax", "nadam", "radam", "adagrad", "rmsprop"}


@pytest.mark.parametrize("kernel", sorted(CODES["hyper_fields"]))
def test_optimizer_step_refuses_a_step_table_it_cannot_read(kernel: str) -> None:
    p = torch.randn(3)
    before = p.clone()
    table = torch.ones(16, dtype=torch.float32)
    fields = CODES["hyper_fields"][kernel]
    # One pointer list and no modes: every kernel's call is malformed past the table, so a taker
    # fails later (depth, modes) with another message, and nothing runs either way.
    with pytest.raises(ValueError, match=rf"^{kernel}: ") as refused:
        _core.optimizer_step(
            kernel, *_list(p), CODES["dtype"]["float32"], _HOST, 0, [0.5] * len(fields), {},
            step_table=table.data_ptr(), step_table_stride=4,
        )  # fmt: skip
    takes_none = f"{kernel}: takes no step table" in str(refused.value)
    assert takes_none == (kernel not in _STEP_TABLE_KERNELS), str(refused.value)
    assert torch.equal(p, before)
