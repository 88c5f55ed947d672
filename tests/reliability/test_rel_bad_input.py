"""Bad input, for every optimizer (class and functional) and every loss in the registry: a clear
exception naming the argument, and every input bit-for-bit unchanged after the failed call.

Where torch defines the behaviour (constructor hyperparameter checks) gradfuse must raise the
very same exception type and message; where gradfuse refuses what torch would accept (a
non-dense tensor, memory shared by two tensors updated in place) the refusal must be a
ValueError/TypeError naming the argument, never a partial or silently wrong update.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from reliability_registry import (
    BAD_HYPERPARAMETERS,
    LOSSES,
    OPTIMIZERS,
    LossSpec,
    OptimSpec,
    functional_call,
    require_class,
    require_functional,
    tensor_lists,
)

import gradfuse
from optim_testing import assert_unchanged, snapshot

# ---------------------------------------------------------------------------------------------
# Helpers


def _strided(x: Any) -> Any:
    """Only dense tensors can be snapshot bitwise; sparse ones are compared by value."""
    return x if isinstance(x, (torch.Tensor, np.ndarray)) else None


def _flatten(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [y for v in obj.values() for y in _flatten(v)]
    if isinstance(obj, (list, tuple)):
        return [y for v in obj for y in _flatten(v)]
    return [obj]


def _snapshot(everything: list[Any]) -> list[Any]:
    return snapshot([_dense_view(x) for x in everything])


def _dense_view(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.layout != torch.strided:
        return x.to_dense()
    if isinstance(x, torch.Tensor) and x.dim() == 0:
        return x.reshape(1)  # a view: snapshot's byte view needs a dimension (step counts)
    return _strided(x)


def assert_refused_unchanged(
    call: Callable[[], Any],
    inputs: Any,
    exc: type[Exception] | tuple[type[Exception], ...],
    match: str,
) -> None:
    everything = _flatten(inputs)
    before = _snapshot(everything)
    with pytest.raises(exc, match=match or None):
        call()
    assert_unchanged(before, [_dense_view(x) for x in everything])


# ---------------------------------------------------------------------------------------------
# Functional layer: every optimizer's fused function, one defect per case.

# (case, what the message must mention, exception type)
FUNCTIONAL_CASES: list[tuple[str, str, type[Exception]]] = [
    ("grad_shape", r"grads\[1\] has shape \(3, 2\)", ValueError),
    ("grad_dtype", r"grads\[0\] has dtype float64", TypeError),
    ("state_shape", r"STATE\[1\] has shape \(3, 2\)", ValueError),
    ("state_dtype", r"STATE\[0\] has dtype float64", TypeError),
    ("int_param", r"params\[1\]: dtype torch.int32 is not supported", TypeError),
    ("bool_grad", r"grads\[0\]: dtype torch.bool is not supported", TypeError),
    ("complex_param", r"params\[0\]: dtype torch.complex64 is not supported", TypeError),
    ("int_state", r"STATE\[0\]: dtype torch.int64 is not supported", TypeError),
    ("sparse_grad", r"grads\[0\]: torch.sparse_coo tensors are not supported", TypeError),
    ("fewer_grads", r"1 grads for 2 params", ValueError),
    ("fewer_state", r"1 STATE for 2 params", ValueError),
    ("same_param_twice", "share memory", ValueError),
    ("state_is_param", "share memory", ValueError),
    ("state_is_grad", "share memory", ValueError),
    ("overlapping_params", "share memory", ValueError),
    ("param_overlaps_grad", "share memory", ValueError),
    ("strided_param", r"params\[0\]: expected a dense tensor", ValueError),
    ("strided_state", r"STATE\[1\]: expected a dense tensor", ValueError),
    ("expanded_grad", r"grads\[1\]: expected a dense tensor", ValueError),
    ("misaligned_param", r"params\[0\]: .*misaligned", ValueError),
    ("nonleaf_param", r"params\[0\]: cannot update a non-leaf tensor", ValueError),
    ("not_a_tensor", r"grads\[1\]: expected a torch.Tensor or numpy.ndarray", TypeError),
    ("numpy_grad_torch_param", "is a numpy.ndarray but", TypeError),
    ("meta_param", r"params\[0\]: device meta is not supported", TypeError),
]


def _first_list_state(spec: OptimSpec) -> str:
    """The first state argument holding tensors shaped like params."""
    for name, kind in spec.state:
        if kind in ("like", "positive"):
            return name
    raise AssertionError(spec.name)


def _build(spec: OptimSpec, case: str) -> tuple[list[Any], list[Any], dict[str, list[Any]], str]:
    params: list[Any] = [torch.randn(6), torch.randn(2, 3)]
    grads: list[Any] = [torch.randn(6), torch.randn(2, 3)]
    state = tensor_lists(spec, params)
    sname = _first_list_state(spec)
    s = state[sname]
    if case == "grad_shape":
        grads[1] = torch.randn(3, 2)
    elif case == "grad_dtype":
        grads[0] = torch.randn(6, dtype=torch.float64)
    elif case == "state_shape":
        s[1] = torch.randn(3, 2).abs()
    elif case == "state_dtype":
        s[0] = torch.randn(6, dtype=torch.float64).abs()
    elif case == "int_param":
        params[1] = torch.ones(2, 3, dtype=torch.int32)
    elif case == "bool_grad":
        grads[0] = torch.ones(6, dtype=torch.bool)
    elif case == "complex_param":
        params[0] = torch.randn(6, dtype=torch.complex64)
    elif case == "int_state":
        s[0] = torch.ones(6, dtype=torch.int64)
    elif case == "sparse_grad":
        grads[0] = torch.randn(6).to_sparse()
    elif case == "fewer_grads":
        grads = grads[:1]
    elif case == "fewer_state":
        state[sname] = s[:1]
    elif case == "same_param_twice":
        params = [params[0], params[0]]
        grads = [grads[0], torch.randn(6)]
        state = tensor_lists(spec, params)
    elif case == "state_is_param":
        s[0] = params[0]
    elif case == "state_is_grad":
        s[1] = grads[1]
    elif case == "overlapping_params":
        base = torch.randn(10)
        params = [base[:6], base[4:].view(2, 3)]  # two views sharing base[4:6]
        state = tensor_lists(spec, params)
    elif case == "param_overlaps_grad":
        base = torch.randn(8)
        params[0], grads[0] = base[:6], base[2:]
    elif case == "strided_param":
        params[0] = torch.randn(12)[::2]
    elif case == "strided_state":
        s[1] = torch.randn(2, 6).abs()[:, ::2]
    elif case == "expanded_grad":
        grads[1] = torch.randn(1, 3).expand(2, 3)
    elif case == "misaligned_param":
        raw = bytearray(4 * 6 + 1)
        params[0] = torch.frombuffer(raw, dtype=torch.float32, offset=1, count=6)
        params[0].copy_(torch.randn(6))
    elif case == "nonleaf_param":
        params[0] = torch.randn(6, requires_grad=True) * 1.0
    elif case == "not_a_tensor":
        grads[1] = [[1.0, 2.0, 3.0]] * 2
    elif case == "numpy_grad_torch_param":
        grads[0] = grads[0].numpy()
    elif case == "meta_param":
        params[0] = torch.empty(6, device="meta")
        state = tensor_lists(spec, [torch.randn(6), params[1]])
        for name, kind in spec.state:
            if kind in ("like", "positive"):
                state[name][0] = torch.empty(6, device="meta")
    else:
        raise AssertionError(case)
    return params, grads, state, sname


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
@pytest.mark.parametrize(
    ("case", "match", "exc"), FUNCTIONAL_CASES, ids=[c[0] for c in FUNCTIONAL_CASES]
)
def test_functional_refuses_bad_input_and_changes_nothing(
    spec: OptimSpec, case: str, match: str, exc: type[Exception]
) -> None:
    require_functional(spec)
    params, grads, state, sname = _build(spec, case)
    call = functional_call(spec, params, grads, state)
    inputs = [params, grads, state]
    if case == "meta_param":
        with pytest.raises(exc, match=match.replace("STATE", re.escape(sname))):
            call()
        return
    if case == "nonleaf_param":
        with torch.no_grad():
            assert_refused_unchanged(call, inputs, exc, match)
        return
    assert_refused_unchanged(call, inputs, exc, match.replace("STATE", re.escape(sname)))


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_functional_valid_call_of_the_battery_succeeds(spec: OptimSpec) -> None:
    # The battery's baseline call is valid: each case above fails for its one defect only.
    require_functional(spec)
    params = [torch.randn(6), torch.randn(2, 3)]
    grads = [torch.randn(6), torch.randn(2, 3)]
    before = snapshot(params)
    functional_call(spec, params, grads, tensor_lists(spec, params))()
    assert not all(torch.equal(a, b) for a, b in zip(before, params, strict=True))


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_functional_zero_size_tensors(spec: OptimSpec) -> None:
    require_functional(spec)
    params: list[Any] = [torch.randn(0), torch.randn(3, 0), torch.randn(5)]
    grads: list[Any] = [torch.randn(0), torch.randn(3, 0), torch.randn(5)]
    state = tensor_lists(spec, params)
    functional_call(spec, params, grads, state)()
    assert params[0].shape == (0,)
    assert params[1].shape == (3, 0)
    assert torch.isfinite(params[2]).all()
    functional_call(spec, [], [], {name: [] for name in state})()  # nothing at all: a no-op


# numpy specifics: read-only, non-contiguous, byte order, unaligned.
NUMPY_CASES: list[tuple[str, str]] = [
    ("read_only_param", r"params\[0\]: the array is read-only"),
    ("read_only_state", r"STATE\[1\]: the array is read-only"),
    ("strided_param", r"params\[1\]: expected a dense array"),
    ("negative_stride_grad", r"grads\[0\]: expected a dense array"),
    ("byteswapped_param", r"params\[0\]: non-native byte order"),
    ("misaligned_grad", r"grads\[1\]: .*misaligned"),
    ("int_grad", r"grads\[0\]: dtype int64 is not supported"),
    ("complex_param", r"params\[1\]: dtype complex128 is not supported"),
]


def _numpy_state(spec: OptimSpec, params: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, kind in spec.state:
        if kind in ("step", "one"):
            out[name] = [1.0 for _ in params]
        else:
            from reliability_registry import make_state

            out[name] = [make_state(kind, p) for p in params]
    return out


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
@pytest.mark.parametrize(("case", "match"), NUMPY_CASES, ids=[c[0] for c in NUMPY_CASES])
def test_functional_numpy_refusals(spec: OptimSpec, case: str, match: str) -> None:
    require_functional(spec)
    rng = np.random.default_rng(3)
    params: list[Any] = [rng.standard_normal(6).astype(np.float32) for _ in range(2)]
    grads: list[Any] = [rng.standard_normal(6).astype(np.float32) for _ in range(2)]
    state = _numpy_state(spec, params)
    sname = _first_list_state(spec)
    if case == "read_only_param":
        params[0].setflags(write=False)
    elif case == "read_only_state":
        state[sname][1].setflags(write=False)
    elif case == "strided_param":
        params[1] = rng.standard_normal(12).astype(np.float32)[::2]
    elif case == "negative_stride_grad":
        grads[0] = grads[0][::-1]
    elif case == "byteswapped_param":
        params[0] = params[0].astype(params[0].dtype.newbyteorder())
    elif case == "misaligned_grad":
        raw = np.zeros(4 * 6 + 1, np.uint8)
        grads[1] = raw[1:].view(np.float32)
        grads[1][:] = rng.standard_normal(6)
    elif case == "int_grad":
        grads[0] = np.ones(6, np.int64)
    elif case == "complex_param":
        params[1] = np.ones(6, np.complex128)
    assert_refused_unchanged(
        functional_call(spec, params, grads, state),
        [params, grads, state],
        (ValueError, TypeError),
        match.replace("STATE", re.escape(sname)),
    )


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_functional_read_only_numpy_gradient_is_accepted(spec: OptimSpec) -> None:
    require_functional(spec)
    rng = np.random.default_rng(4)
    params = [rng.standard_normal(6).astype(np.float32)]
    grads = [rng.standard_normal(6).astype(np.float32)]
    grads[0].setflags(write=False)
    before = params[0].copy()
    functional_call(spec, params, grads, _numpy_state(spec, params))()
    assert not np.array_equal(before, params[0])


# ---------------------------------------------------------------------------------------------
# A CUDA tensor in a build without CUDA.


@pytest.mark.skipif(gradfuse.cuda_compiled(), reason="this gradfuse build has CUDA kernels")
def test_binding_refuses_cuda_device_in_cpu_only_build() -> None:
    core = gradfuse._native.core()
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    slots = [[p.ctypes.data], [g.ctypes.data]]
    with pytest.raises(ValueError, match="built without CUDA"):
        core.optimizer_step(
            "sgd",
            slots,
            [4],
            0,
            0,
            0,
            [0.1, 0.0, 0.0, 0.0],  # lr, momentum, dampening, weight_decay
            {"nesterov": 0, "maximize": 0, "first_step": 0},
        )
    assert np.array_equal(p, np.ones(4, np.float32))


@pytest.mark.skipif(
    gradfuse.cuda_compiled() or not torch.cuda.is_available(),
    reason="needs a CUDA torch with a GPU and a gradfuse built without CUDA",
)
@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_functional_refuses_cuda_tensor_in_cpu_only_build(spec: OptimSpec) -> None:
    require_functional(spec)
    params = [torch.randn(6), torch.randn(6, device="cuda")]
    grads = [torch.randn(6), torch.randn(6, device="cuda")]
    state = {
        n: [
            x.to(p.device) if isinstance(x, torch.Tensor) and x.dim() else x
            for x, p in zip(v, params, strict=True)
        ]
        for n, v in tensor_lists(spec, params).items()
    }
    assert_refused_unchanged(
        functional_call(spec, params, grads, state),
        [params, grads, state],
        ValueError,
        r"params\[1\].*built without CUDA",
    )


# ---------------------------------------------------------------------------------------------
# Optimizer classes: constructor checks exactly as torch, and step() on odd tensors.


def _outcome(fn: Callable[[], Any]) -> tuple[str, str] | None:
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the exception is the result being compared
        return type(e).__name__, str(e)
    return None


def _hyper_cases() -> list[Any]:
    import inspect

    out = []
    for spec in OPTIMIZERS:
        if not spec.has_torch_class():
            continue  # torch has no class of that name: no message to compare with
        accepted = set(inspect.signature(spec.torch_class().__init__).parameters)
        for k, bad in enumerate(BAD_HYPERPARAMETERS):
            if set(bad) <= accepted:
                out.append(pytest.param(spec, bad, id=f"{spec.name}-{k}-{'-'.join(bad)}"))
    return out


@pytest.mark.parametrize(("spec", "bad"), _hyper_cases())
def test_constructor_errors_are_torchs(spec: OptimSpec, bad: dict[str, Any]) -> None:
    cls = require_class(spec)
    kwargs = {**spec.configs[0], **bad}
    want = _outcome(lambda: spec.torch_class()([torch.randn(3, requires_grad=True)], **kwargs))
    got = _outcome(lambda: cls([torch.randn(3, requires_grad=True)], **kwargs))
    assert got == want, f"{spec.name}({kwargs}): gradfuse {got}, torch {want}"


# Odd but legal tensors handed to step(): gradfuse must either give torch's result or refuse
# with a clear ValueError/TypeError naming params/grads, changing nothing.
STEP_CASES = [
    "zero_size",
    "strided_param",
    "strided_grad",
    "overlapping_params",
    "grad_is_param_view",
    "sparse_grad",
    "channels_last",
    "scalar_param",
]


def _step_case(case: str, seed: int) -> list[torch.Tensor]:
    """Params with .grad set, built the same way for torch and gradfuse (same seed)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    if case == "zero_size":
        ps = [rnd(0), rnd(3, 0), rnd(5)]
    elif case == "strided_param":
        ps = [rnd(4, 6)[:, ::2], rnd(5)]
    elif case == "overlapping_params":
        base = rnd(10)
        ps = [base[:6], base[4:]]
    elif case == "channels_last":
        ps = [rnd(2, 3, 4, 5).to(memory_format=torch.channels_last), rnd(7)]
    elif case == "scalar_param":
        ps = [rnd(()), rnd(3)]
    else:
        ps = [rnd(6), rnd(2, 3)]
    ps = [p.requires_grad_(True) if p.is_leaf else p.detach().requires_grad_(True) for p in ps]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(memory_format=torch.contiguous_format)
    if case == "channels_last":
        ps[0].grad = ps[0].grad.to(memory_format=torch.channels_last)  # type: ignore[union-attr]
    if case == "strided_grad":
        ps[0].grad = rnd(12)[::2]
    if case == "grad_is_param_view":
        ps[0].grad = ps[0].detach()
    if case == "sparse_grad":
        ps[0].grad = rnd(6).to_sparse()
    return ps


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
@pytest.mark.parametrize("case", STEP_CASES)
def test_step_matches_torch_or_refuses_cleanly(spec: OptimSpec, case: str) -> None:
    cls = require_class(spec)
    config = spec.configs[-1]
    ps = _step_case(case, 7)
    ref = _step_case(case, 7)
    before = _snapshot([*ps, *[p.grad for p in ps]])
    opt = cls(ps, **config)
    got = _outcome(opt.step)
    want = _outcome(spec.torch_class()(ref, **spec.torch_kwargs(config)).step)
    if got is None:
        assert want is None, f"torch refused ({want}) but gradfuse accepted"
        for a, b in zip(ps, ref, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), equal_nan=True)
        return
    if want is not None and got == want:
        return  # the same error as torch (e.g. a sparse gradient torch refuses too)
    kind, msg = got
    # A refusal names the offending argument; a sparse gradient may be refused the way torch's
    # own optimizers refuse it ("<Name> does not support sparse gradients", RuntimeError).
    if case == "sparse_grad" and kind == "RuntimeError":
        assert "sparse gradients" in msg, msg
    else:
        assert kind in ("ValueError", "TypeError"), f"unclear refusal {got}"
        assert re.search(r"params\[\d+\]|grads\[\d+\]|share memory", msg), msg
    assert_unchanged(before, _snapshot([*ps, *[p.grad for p in ps]]))


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
@pytest.mark.parametrize("bad", ["state_shape", "strided_param"])
def test_a_step_refused_in_one_group_changes_no_group(spec: OptimSpec, bad: str) -> None:
    """Every group is checked before any is written: a refusal in the last group leaves the
    params, state and counters of the groups before it as they were (they used to have stepped),
    and makes no first state; the message says which group."""
    cls = require_class(spec)
    gen = torch.Generator().manual_seed(3)
    good = [torch.randn(5, generator=gen).requires_grad_(True) for _ in range(2)]
    other = torch.randn(4, 3, generator=gen).requires_grad_(True)
    opt = cls([{"params": good}, {"params": [other]}], **spec.configs[-1])
    for p in (*good, other):
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()  # every param has state now
    if bad == "state_shape":  # a checkpoint's tensor of another shape
        key = next((k for k, v in opt.state[other].items() if torch.is_tensor(v) and v.dim()), None)
        if key is None:
            pytest.skip(f"{spec.name} keeps no tensor state in this configuration")
        opt.state[other][key] = torch.zeros(7)
    else:  # a param not laid out densely, with no state yet
        other = torch.randn(8, 6, generator=gen)[::2, ::2].requires_grad_(True)
        other.grad = torch.randn(other.shape, generator=gen)
        opt.param_groups[1]["params"] = [other]
    for p in good:
        p.grad = torch.randn(p.shape, generator=gen)
    tensors = [*good, *(v for p in good for v in opt.state[p].values() if torch.is_tensor(v))]
    before = _snapshot(tensors)
    entries = {id(p): dict(opt.state[p]) for p in good}
    with pytest.raises((ValueError, TypeError)) as raised:
        opt.step()
    assert "param group 1" in "".join(getattr(raised.value, "__notes__", []))
    assert_unchanged(before, _snapshot(tensors))
    assert all(dict(opt.state[p]) == entries[id(p)] for p in good)
    if bad == "strided_param":
        assert not opt.state.get(other)  # no first state made for the refused param


@pytest.mark.parametrize("name", ["LAMB", "Adafactor", "ScheduleFreeAdamW", "Muon"])
def test_a_group_by_group_update_keeps_what_it_wrote(name: str) -> None:
    """Updates that write group by group (LAMB, Adafactor, Muon, schedule-free): a refusal in a
    later group leaves the earlier groups stepped, and their state is kept (a first step's
    rollback must not delete state of params that were stepped)."""
    gen = torch.Generator().manual_seed(5)
    good = torch.randn(6, 4, generator=gen).requires_grad_(True)
    bad = torch.randn(8, 6, generator=gen)[::2, ::2].requires_grad_(True)  # strided: refused
    groups: list[dict[str, Any]] = [{"params": [good]}, {"params": [bad]}]
    opt = getattr(gradfuse.optim, name)(groups, lr=0.01)
    if hasattr(opt, "train"):
        opt.train()
    good.grad = torch.randn(6, 4, generator=gen)
    bad.grad = torch.randn(4, 3, generator=gen)
    before = good.detach().clone()
    with pytest.raises((ValueError, TypeError)):
        opt.step()
    assert not torch.equal(good.detach(), before)  # written before the refusal (documented)
    assert opt.state.get(good), "the stepped param's state was deleted"


def test_a_relayout_undone_when_the_step_fails_otherwise() -> None:
    """A re-laid param's 8-bit state is quantized again in its new layout only if the step
    then goes through: with a refused param beside it, the state stays bit for bit."""
    gen = torch.Generator().manual_seed(6)
    p = torch.randn(8, 4, 3, 3, generator=gen).requires_grad_(True)
    opt = gradfuse.optim.AdamW8bit([p], min_8bit_size=16)
    p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    p.data = p.detach().clone(memory_format=torch.channels_last)  # model.to(channels_last)
    bad = torch.randn(8, 6, generator=gen)[::2, ::2].requires_grad_(True)
    bad.grad = torch.randn(4, 3, generator=gen)
    opt.param_groups[0]["params"].append(bad)
    state = [v for v in opt.state[p].values() if torch.is_tensor(v)]
    before = _snapshot(state)
    with pytest.raises(ValueError, match=r"params\[1\]") as raised:
        opt.step()
    assert raised.value.__context__ is None or raised.value.__context__ is not raised.value
    assert_unchanged(before, _snapshot([v for v in opt.state[p].values() if torch.is_tensor(v)]))


def test_add_param_group_checks_named_params() -> None:
    opt = gradfuse.optim.AdamW(
        [torch.randn(3, dtype=torch.bfloat16, requires_grad=True)], kahan=True
    )
    with pytest.raises(ValueError, match="kahan=True needs bfloat16 params"):
        opt.add_param_group({"params": [("w", torch.randn(3, requires_grad=True))]})
    assert len(opt.param_groups) == 1


# ---------------------------------------------------------------------------------------------
# Losses: where torch raises, gradfuse raises (a clear error, never a crash) and changes nothing.

LOSS_CASES = [
    "shape_mismatch",
    "int_input",
    "bool_input",
    "complex_input",
    "dtype_mismatch",
    "target_out_of_range",
    "negative_target",
    "float_target_for_classes",
    "target_rows_mismatch",
    "bad_reduction",
    "weight_wrong_size",
]


def _loss_case(spec: LossSpec, case: str) -> tuple[Any, Any, dict[str, Any]] | None:
    """(input, target, kwargs) with one defect, or None when the case does not apply."""
    shape = (4, 5)
    x, t = spec.make(shape, torch.float32)
    kw: dict[str, Any] = dict(spec.configs[0])
    cls = spec.kind == "class"
    if case == "shape_mismatch":
        if cls:
            return None
        t = torch.randn(3, 7)
    elif case == "int_input":
        x = torch.ones(shape, dtype=torch.int64)
    elif case == "bool_input":
        x = torch.ones(shape, dtype=torch.bool)
    elif case == "complex_input":
        x = torch.randn(shape, dtype=torch.complex64)
    elif case == "dtype_mismatch":
        if cls:
            return None
        t = t.double()
    elif case == "target_out_of_range":
        if not cls:
            return None
        t = t.clone()
        t[2] = shape[1]
    elif case == "negative_target":
        if not cls:
            return None
        t = t.clone()
        t[1] = -3
    elif case == "float_target_for_classes":
        if spec.name != "nll_loss":
            return None
        t = t.float()
    elif case == "target_rows_mismatch":
        if not cls:
            return None
        t = t[:3]
    elif case == "bad_reduction":
        kw["reduction"] = "average"
    elif case == "weight_wrong_size":
        if spec.name in ("cross_entropy", "nll_loss"):
            kw["weight"] = torch.ones(shape[1] + 1)
        elif spec.name == "binary_cross_entropy_with_logits":
            kw["weight"] = torch.ones(3, 7)
        else:
            return None
    return x, t, kw


def _torch_raises(spec: LossSpec, x: Any, t: Any, kw: dict[str, Any]) -> bool:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _outcome(lambda: spec.torch_fn()(x.clone(), t.clone(), **kw)) is not None


def _loss_cases() -> list[Any]:
    return [
        pytest.param(spec, case, id=f"{spec.name}-{case}", marks=spec.marks(f"bad:{case}"))
        for spec in LOSSES
        for case in LOSS_CASES
        if _loss_case(spec, case) is not None
    ]


# nn.functional may fall back to torch, with a warning, for what its kernels do not take
# (DESIGN.md §6): torch's own error is then the clear error.
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("spec", "case"), _loss_cases())
@pytest.mark.parametrize("layer", ["nn.functional", "with_grad"])
def test_loss_refuses_what_torch_refuses(spec: LossSpec, case: str, layer: str) -> None:
    fn = spec.require_fn() if layer == "nn.functional" else spec.require_with_grad()
    built = _loss_case(spec, case)
    assert built is not None
    x, t, kw = built
    if not _torch_raises(spec, x, t, kw):
        pytest.skip(f"torch accepts {case} for {spec.name} (gradfuse may too)")
    assert_refused_unchanged(
        lambda: fn(x, t, **kw),
        [x, t, kw],
        (ValueError, TypeError, IndexError, RuntimeError, NotImplementedError),
        "",
    )


# ---------------------------------------------------------------------------------------------
# On a GPU machine: device mismatches, and out-of-range class targets on CUDA.


@pytest.mark.cuda
@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_functional_refuses_device_mismatch(spec: OptimSpec) -> None:
    require_functional(spec)
    params: list[Any] = [torch.randn(6, device="cuda"), torch.randn(2, 3, device="cuda")]
    grads: list[Any] = [torch.randn(6, device="cuda"), torch.randn(2, 3)]  # grads[1] on the CPU
    state = {
        n: [x.cuda() if x.dim() else x for x in v]
        for n, v in tensor_lists(spec, [p.cpu() for p in params]).items()
    }
    assert_refused_unchanged(
        functional_call(spec, params, grads, state),
        [params, grads, state],
        ValueError,
        r"grads\[1\] is on cpu but params\[1\] is on cuda",
    )


@pytest.mark.cuda
@pytest.mark.parametrize("spec", [s for s in LOSSES if s.kind == "class"], ids=lambda s: s.id)
def test_cuda_out_of_range_target_is_a_clear_error(spec: LossSpec) -> None:
    fn = spec.require_with_grad()
    x, t = spec.make((8, 5), torch.float32)
    x, t = x.cuda(), t.cuda()
    t[3] = 5
    assert_refused_unchanged(
        lambda: (fn(x, t), torch.cuda.synchronize()),
        [x, t],
        (ValueError, IndexError, RuntimeError),
        "",
    )
    # The device is still usable afterwards (no sticky CUDA error).
    torch.testing.assert_close((x + 1).cpu(), x.cpu() + 1)


# ---------------------------------------------------------------------------------------------
# The overlap check itself, against a brute-force oracle.


def test_check_no_overlap_agrees_with_brute_force() -> None:
    # _buffers.check_no_overlap sweeps address ranges sorted by start; every pair of buffers that
    # share a byte, one of them written, must be refused, and nothing else.
    import random

    from gradfuse._buffers import Buffer, check_no_overlap

    def buf(start: int, size: int, device: int) -> Buffer:
        return Buffer(None, start, size, 1, "float32", device, (size,), (1,), True)

    rng = random.Random(0)
    for _ in range(3000):
        named = [
            (f"b{j}", buf(rng.randint(0, 40), rng.randint(0, 12), rng.choice((-1, -1, 0))))
            for j in range(rng.randint(2, 6))
        ]
        written = {n for n, _ in named if rng.random() < 0.4}
        expected = any(
            a.device == b.device
            and a.nbytes > 0
            and b.nbytes > 0
            and a.ptr < b.ptr + b.nbytes
            and b.ptr < a.ptr + a.nbytes
            and (na in written or nb in written)
            for i, (na, a) in enumerate(named)
            for nb, b in named[i + 1 :]
        )
        try:
            check_no_overlap(named, written)
            refused = False
        except ValueError:
            refused = True
        assert refused == expected, (named, written)
