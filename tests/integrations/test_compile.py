"""torch.compile with gradfuse: the fused updates trace as the custom op gradfuse::fused_update_
(gradfuse/_compile.py), the max_grad_norm / clip_grad_norm_ passes as gradfuse::total_norm and
gradfuse::scale_grads_, with no graph break (fullgraph=True), on the CPU with inductor, and
give the same bits as eager: the precision policies (None entries in the state lists, 8-bit
absmax lists nested per state list) and Muon (whose bfloat16 Newton-Schulz inductor would
otherwise fuse) included."""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import integration_cases
import pytest
import torch
from torch import nn

import gradfuse
import gradfuse._compile
import optim_testing
import tolerances

STEPS = 4


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(9, 17), nn.Tanh(), nn.Linear(17, 3)).double()


def _grads(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(5, 9, generator=g, dtype=torch.float64)
    model.zero_grad()
    model(x).square().mean().backward()


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize(
    ("name", "kwargs"), integration_cases.params(fast=integration_cases.COMPILE)
)
def test_compiled_step_equals_eager(name: str, kwargs: dict[str, Any]) -> None:
    eager_model = _model()
    compiled_model = copy.deepcopy(eager_model)
    torch_model = copy.deepcopy(eager_model)
    eager = integration_cases.make("gradfuse", name, eager_model.parameters(), kwargs)
    compiled = integration_cases.make("gradfuse", name, compiled_model.parameters(), kwargs)
    reference = integration_cases.make("torch", name, torch_model.parameters(), kwargs)
    step = torch.compile(compiled.step, fullgraph=True)  # fullgraph: a graph break fails
    for s in range(STEPS):
        for m in (eager_model, compiled_model, torch_model):
            _grads(m, s)
        eager.step()
        step()
        reference.step()
    for i, (a, b, c) in enumerate(
        zip(
            compiled_model.parameters(),
            eager_model.parameters(),
            torch_model.parameters(),
            strict=True,
        )
    ):
        # The op runs the eager function on the same values: the same bits.
        assert torch.equal(a, b), f"param {i}: compiled differs from eager"
        tolerances.assert_close(a, c, tolerances.TRAJECTORY[torch.float64], f"param {i} vs torch")
    # The state created inside the compiled step is in the optimizer, as in eager.
    assert compiled.state_dict()["state"].keys() == eager.state_dict()["state"].keys()
    for k, st in compiled.state_dict()["state"].items():
        for key, v in st.items():
            ref = eager.state_dict()["state"][k][key]
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(ref)), (k, key)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_compiled_functional_call(momentum: float) -> None:
    params = optim_testing.make_params([(7,), (4097,), (1,), (0,)], torch.float32)
    grads = optim_testing.random_grads(params, steps=3)

    def run(fn: Any) -> list[torch.Tensor]:
        ps = [p.clone() for p in params]
        bufs: list[torch.Tensor | None] = [None] * len(ps)
        for gs in grads:
            fn(ps, gs, bufs)
        return ps

    def update(ps: list[torch.Tensor], gs: list[torch.Tensor], bufs: list[Any]) -> None:
        gradfuse.functional.sgd_(ps, gs, bufs, lr=0.1, momentum=momentum, weight_decay=0.01)

    want = run(update)
    got = run(torch.compile(update, fullgraph=True))
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), f"param {i}"


def test_custom_op_passes_opcheck() -> None:
    # torch's own checks of a custom op: schema (declared mutations), fake tensor
    # implementation, autograd registration, AOT dispatch.
    p = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    g = [torch.randn(5, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
    floats = [0.1]  # lr
    # One code per parameter of sgd_, then its operands: params written (two tensors), grads
    # read (two tensors), momentum_buffers None, lr a float, the other keyword arguments left
    # at their defaults.
    c = gradfuse._compile
    rest = len(inspect.signature(gradfuse.functional.sgd_).parameters) - 4
    tensors2 = [c._E_TENSOR, c._E_TENSOR]
    layout = [c._WRITTEN, 2, *tensors2, c._READ, 2, *tensors2, c._NONE, c._FLOAT]
    layout += [c._ABSENT] * rest
    before = [t.clone() for t in p]
    args = ("sgd_", p, g, floats, [], [], layout)
    torch.library.opcheck(torch.ops.gradfuse.fused_update_.default, args)
    # opcheck ran the op on copies; running it here performs one plain SGD step.
    torch.ops.gradfuse.fused_update_(*args)
    for a, b0, gg in zip(p, before, g, strict=True):
        tolerances.assert_close(a, b0 - 0.1 * gg, tolerances.STEP[torch.float64])
    # A layout that does not match the arguments is refused before anything runs.
    with pytest.raises(ValueError, match="layout of sgd_"):
        torch.ops.gradfuse.fused_update_("sgd_", p, g, floats, [], [], layout[:-1])


def test_norm_ops_pass_opcheck() -> None:
    grads = [torch.randn(5, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float32)]
    torch.library.opcheck(torch.ops.gradfuse.total_norm.default, ("clip_grad_norm_", grads, 2.0))
    coef = torch.tensor([0.5], dtype=torch.float32)
    torch.library.opcheck(torch.ops.gradfuse.scale_grads_.default, (grads, coef))


def test_unregistered_name_is_an_error() -> None:
    assert gradfuse._compile.OP_NAME == "gradfuse::fused_update_"
    with pytest.raises(KeyError, match="no_such_op_"):
        torch.ops.gradfuse.fused_update_("no_such_op_", [], [], [], [], [], [])


def test_tensor_lr_with_scheduler_does_not_recompile() -> None:
    # The pattern torch documents for compiled optimizers with a scheduler: lr as a tensor
    # (a graph input, not a constant), the step compiled inside a function.
    from torch._dynamo.utils import counters

    first = _model()
    models = [first, copy.deepcopy(first)]
    opts = [gradfuse.optim.SGD(m.parameters(), lr=torch.tensor(0.05), momentum=0.9) for m in models]
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.7) for o in opts]

    @torch.compile
    def compiled_step() -> None:
        opts[0].step()

    counters.clear()
    for s in range(5):
        for m in models:
            _grads(m, s)
        compiled_step()
        opts[1].step()
        for sch in scheds:
            sch.step()
    assert counters["stats"]["unique_graphs"] <= 2  # first step (state creation) + the rest
    for i, (a, b) in enumerate(zip(models[0].parameters(), models[1].parameters(), strict=True)):
        assert torch.equal(a, b), f"param {i}: compiled with scheduler differs from eager"


_SEED = 2**64 - 12345  # a 64-bit seed: exact through the op (a float would round it)


@gradfuse._compile.traceable(
    written=("params", "bufs", "spare", "nested"),
    creates={"bufs": lambda kw: kw.get("use_bufs", True)},
)
def _toy_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    bufs: list[torch.Tensor | None],
    *,
    betas: tuple[float, float],
    steps: list[int],
    scale: torch.Tensor | None = None,
    use_bufs: bool = True,
    count: int = 1,
    seed: int = 0,
    mode: str = "nearest",
    dtype: torch.dtype = torch.float32,
    dtypes: list[torch.dtype] | None = None,
    spare: list[torch.Tensor | None] | None = None,
    nested: list[list[torch.Tensor | None]] | None = None,
) -> None:
    """Every kind of argument the generic op carries: written lists with state created on the
    first call, a read list, a tuple and a list of numbers, an optional tensor, a bool, an int
    (one of 64 bits), a string, a dtype and a list of them, a written list whose None entries
    are not state to create, a nested list (as 8-bit state's absmax lists).
    Plain torch code: it only ever runs eagerly, inside the op."""
    assert isinstance(betas, tuple)
    assert isinstance(steps, list)
    assert isinstance(use_bufs, bool)
    assert isinstance(count, int)
    assert seed == _SEED
    assert mode == "stochastic"
    assert dtype is torch.bfloat16
    assert dtypes == [torch.float64, torch.uint8]
    assert spare is not None
    assert spare[0] is None  # not created: None, as given
    assert nested is not None
    assert nested[0][1] is None
    assert nested[1] == []
    spare[1].add_(1.0)  # type: ignore[union-attr]
    nested[0][0].mul_(2.0)  # type: ignore[union-attr]
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        d = g * (1.0 if scale is None else scale)
        if use_bufs:
            if bufs[i] is None:
                bufs[i] = d.clone()
            else:
                bufs[i].mul_(betas[0]).add_(d)  # type: ignore[union-attr]
            d = bufs[i]  # type: ignore[assignment]
        p.sub_(betas[1] * steps[i] * count * d)


@pytest.mark.parametrize("use_bufs", [True, False])
@pytest.mark.parametrize("scale", [None, 0.5])
def test_generic_op_carries_every_argument_kind(use_bufs: bool, scale: float | None) -> None:
    params = optim_testing.make_params([(5,), (3, 2)], torch.float64)
    grads = optim_testing.random_grads(params, steps=3)

    def run(fn: Any) -> tuple[list[torch.Tensor], list[Any]]:
        ps = [p.clone() for p in params]
        bufs: list[Any] = [None] * len(ps)
        spare: list[Any] = [None, torch.zeros(2)]
        nested: list[list[Any]] = [[torch.ones(3), None], []]
        for gs in grads:
            fn(ps, gs, bufs, spare, nested)
        return ps, [*bufs, *spare, *nested[0], *nested[1]]

    def update(
        ps: list[torch.Tensor], gs: list[torch.Tensor], bufs: list[Any], spare: Any, nested: Any
    ) -> None:
        _toy_(
            ps,
            gs,
            bufs,
            betas=(0.9, 0.1),
            steps=[1, 2],
            scale=None if scale is None else torch.tensor(scale, dtype=torch.float64),
            use_bufs=use_bufs,
            count=2,
            seed=_SEED,
            mode="stochastic",
            dtype=torch.bfloat16,
            dtypes=[torch.float64, torch.uint8],
            spare=spare,
            nested=nested,
        )

    want, want_bufs = run(update)
    got, got_bufs = run(torch.compile(update, fullgraph=True))
    for a, b in zip(got + got_bufs, want + want_bufs, strict=True):
        if b is None:
            assert a is None  # a slot the function does not use stays untouched
        else:
            assert torch.equal(a, b)


def _wide_model(dtype: torch.dtype) -> nn.Module:
    # A 64x80 weight (5120 elements: 8-bit state at the default min_8bit_size of 4096, a matrix
    # for Adafactor's factored state and Muon) and 1-D biases (float32 state under 8-bit,
    # Adafactor's unfactored variance, Muon's AdamW groups).
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 80), nn.Tanh(), nn.Linear(80, 3)).to(dtype)


def _wide_grads(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    dtype = next(model.parameters()).dtype
    model.zero_grad()
    model(torch.randn(5, 64, generator=g).to(dtype)).float().square().mean().backward()


def _assert_same_bits(
    compiled: torch.optim.Optimizer,
    eager: torch.optim.Optimizer,
    compiled_model: nn.Module,
    eager_model: nn.Module,
) -> None:
    for i, (a, b) in enumerate(
        zip(compiled_model.parameters(), eager_model.parameters(), strict=True)
    ):
        assert torch.equal(a, b), f"param {i}: compiled differs from eager"
    ours, theirs = compiled.state_dict(), eager.state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for k, st in ours["state"].items():
        assert st.keys() == theirs["state"][k].keys(), k
        for key, value in st.items():
            ref = torch.as_tensor(theirs["state"][k][key])
            v = torch.as_tensor(value)
            assert v.dtype == ref.dtype, (k, key)
            assert torch.equal(v, ref), (k, key)
    # The stochastic-rounding seed and call counter went on as in eager.
    assert ours.get("gradfuse_low_precision") == theirs.get("gradfuse_low_precision")


def _compiled_and_eager(
    make: Any, dtype: torch.dtype, fullgraph: bool, steps: int = 3
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, nn.Module, nn.Module]:
    eager_model = _wide_model(dtype)
    compiled_model = copy.deepcopy(eager_model)
    torch.manual_seed(1)  # the stochastic-rounding seed: the same for both
    eager = make(eager_model)
    torch.manual_seed(1)
    compiled = make(compiled_model)
    step = torch.compile(compiled.step, fullgraph=fullgraph)
    with warnings.catch_warnings():
        if not fullgraph:  # dynamo warns of the native calls it breaks the graph at
            warnings.filterwarnings("ignore", "Dynamo (does not know|detected a call)", UserWarning)
        for s in range(steps):
            for m in (eager_model, compiled_model):
                _wide_grads(m, s)
            eager.step()
            step()
    return compiled, eager, compiled_model, eager_model


def _ps(make: Any) -> Any:
    return lambda model: make(model.parameters())


go = gradfuse.optim


def _with_amp(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``opt`` with the scale and verdict GradScaler hands an optimizer that unscales itself."""
    opt.grad_scale = torch.tensor([4.0])  # type: ignore[attr-defined]
    opt.found_inf = torch.tensor([0.0])  # type: ignore[attr-defined]
    return opt


# (optimizer with an option whose state lists hold None entries or nested lists, param dtype,
# fullgraph). Every one failed to compile, or was refused, before these lists could be recorded.
POLICY_CASES = {
    # row_vars/col_vars for the weight, variances for the bias: None where absent
    "Adafactor": (_ps(lambda ps: go.Adafactor(ps, lr=1e-2)), torch.float32, True),
    # master_params: None for float32 params (a documented no-op)
    "AdamW-master_weights-float32": (
        _ps(lambda ps: go.AdamW(ps, master_weights=True)),
        torch.float32,
        True,
    ),
    "AdamW-master_weights": (
        _ps(lambda ps: go.AdamW(ps, master_weights=True)),
        torch.bfloat16,
        True,
    ),
    "Adafactor-master_weights": (
        _ps(lambda ps: go.Adafactor(ps, master_weights=True)),
        torch.bfloat16,
        True,
    ),
    "AdamW-kahan": (_ps(lambda ps: go.AdamW(ps, kahan=True)), torch.bfloat16, True),
    # a 64-bit seed per call: exact through the op, the counter advanced as in eager
    "AdamW-stochastic": (_ps(lambda ps: go.AdamW(ps, rounding="stochastic")), torch.bfloat16, True),
    "AdamW-state_float32": (
        _ps(lambda ps: go.AdamW(ps, state_dtype=torch.float32)),
        torch.bfloat16,
        True,
    ),
    # state created by the update itself, in the state dtype
    "SGD-state_bfloat16": (
        _ps(lambda ps: go.SGD(ps, lr=0.05, momentum=0.9, state_dtype=torch.bfloat16)),
        torch.float32,
        True,
    ),
    # 8-bit codes and their absmax created by the update: nested state_absmax lists
    "SGD8bit": (_ps(lambda ps: go.SGD8bit(ps, lr=0.05, momentum=0.9)), torch.float32, True),
    # The optimizer quantizes its new zero state on the first step: the op
    # gradfuse::quantize_blockwise8 (a graph break at the native call before it).
    "AdamW8bit": (_ps(go.AdamW8bit), torch.float32, True),
    "Adam8bit-bfloat16": (_ps(go.Adam8bit), torch.bfloat16, True),
    "Muon8bit": (lambda m: go.Muon8bit(go.muon_param_groups(m)), torch.float32, True),
    "ADOPT8bit": (_ps(go.ADOPT8bit), torch.float32, True),
}
_FAST_POLICY = ("Adafactor", "AdamW-master_weights-float32", "AdamW-stochastic", "AdamW8bit")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=() if c in _FAST_POLICY else (pytest.mark.slow,)) for c in POLICY_CASES],
)
def test_compiled_policy_step_equals_eager(case: str) -> None:
    make, dtype, fullgraph = POLICY_CASES[case]
    _assert_same_bits(*_compiled_and_eager(make, dtype, fullgraph))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_ps(lambda ps: go.AdamW(ps, lr=1e-2, max_grad_norm=0.01)), id="AdamW"),
        # AMP's scale as GradScaler sets it: the norm is unscaled by it in the traced program
        pytest.param(
            _ps(lambda ps: _with_amp(go.AdamW(ps, lr=1e-2, max_grad_norm=0.01))), id="AdamW-amp"
        ),
        # LAMB clips to apex's max_grad_norm=1.0 by default; 0.01 makes it bite here
        pytest.param(_ps(lambda ps: go.LAMB(ps, max_grad_norm=0.01)), id="LAMB"),
        pytest.param(
            lambda m: go.Muon(go.muon_param_groups(m), max_grad_norm=0.01),
            id="Muon",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_compiled_max_grad_norm_traces_and_equals_eager(make: Any) -> None:
    # max_grad_norm's global norm is a native pass: under torch.compile it is the op
    # gradfuse::total_norm, so the step traces whole (fullgraph) and clips as eager does.
    _assert_same_bits(*_compiled_and_eager(make, torch.float32, fullgraph=True))


def test_compiled_clip_grad_norm_equals_eager() -> None:
    # float32 and float64 gradients: two native norm passes, their total in float64.
    def make() -> list[torch.Tensor]:
        torch.manual_seed(0)
        ps = [torch.randn(300, requires_grad=True), torch.randn(7, 3, dtype=torch.float64)]
        for p in ps:
            p.grad = torch.randn_like(p)
        return ps

    def clip(ps: list[torch.Tensor]) -> torch.Tensor:
        return gradfuse.clip_grad_norm_(ps, 0.5)

    want_params, got_params = make(), make()
    want = clip(want_params)
    got = torch.compile(clip, fullgraph=True)(got_params)
    assert got.dtype == want.dtype
    assert torch.equal(got, want)
    for a, b in zip(got_params, want_params, strict=True):
        assert torch.equal(a.grad, b.grad)  # type: ignore[arg-type]


def test_compiled_muon_gives_eager_bits() -> None:
    # bfloat16 Newton-Schulz: traced by inductor it would keep float32 values where eager
    # rounds to bfloat16 (1e-4 apart after 3 steps); the op runs the eager update.
    def make(model: nn.Module) -> torch.optim.Optimizer:
        return go.Muon(go.muon_param_groups(model))

    _assert_same_bits(*_compiled_and_eager(make, torch.float32, fullgraph=True))


def test_amp_skipped_first_step_under_compile() -> None:
    # A first step that AMP skips creates no momentum buffer in eager, but the traced program
    # has already put one in the state: the op zeroes it, and with dampening == 0 the next
    # step's buffer (0 * momentum + g) is eager's first buffer (g).
    models = [_model(), _model()]
    models[1].load_state_dict(models[0].state_dict())
    opts = [gradfuse.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]
    step = torch.compile(opts[1].step, fullgraph=True)
    for s, inf in enumerate([1.0, 0.0, 0.0]):
        for m, opt in zip(models, opts, strict=True):
            _grads(m, s)
            opt.found_inf = torch.tensor([inf], dtype=torch.float32)  # type: ignore[attr-defined]
            opt.grad_scale = torch.tensor([1.0], dtype=torch.float32)  # type: ignore[attr-defined]
        opts[0].step()
        step()
        if s == 0:
            assert not any(opts[0].state.values())  # eager: no buffer created
            for p in models[1].parameters():
                assert torch.count_nonzero(opts[1].state[p]["momentum_buffer"]) == 0
    for i, (a, b) in enumerate(zip(models[1].parameters(), models[0].parameters(), strict=True)):
        assert torch.equal(a, b), f"param {i}"


def test_quantize_op_passes_opcheck() -> None:
    x = torch.randn(700) * 3.0  # three blocks of 256, the last one short
    for signed in (True, False):
        torch.library.opcheck(torch.ops.gradfuse.quantize_blockwise8.default, (x.abs(), signed))
    codes, absmax = torch.ops.gradfuse.quantize_blockwise8(x, True)
    want_codes, want_absmax = gradfuse.optim.quantize_blockwise(x, True)
    assert torch.equal(codes, want_codes)
    assert torch.equal(absmax, want_absmax)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_ps(lambda ps: go.ADOPT(ps, lr=1e-2, weight_decay=1e-3)), id="default"),
        # the clip off; weight decay decoupled
        pytest.param(
            _ps(lambda ps: go.ADOPT(ps, clip_lambda=None, weight_decay=1e-2, weight_decouple=True)),
            id="no-clip",
        ),
        pytest.param(
            _ps(lambda ps: go.ADOPT(ps, lr=1e-2, max_grad_norm=0.01)),
            id="max_grad_norm",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_compiled_adopt_traces_and_equals_eager(make: Any) -> None:
    # ADOPT's clip_lambda (a Python callable) travels to the op by its index in a table, and
    # its group count (a host read of the step) is read when the state is: a whole graph.
    compiled, eager, compiled_model, eager_model = _compiled_and_eager(
        make, torch.float32, fullgraph=True
    )
    _assert_same_bits(compiled, eager, compiled_model, eager_model)
    # pytorch_optimizer's group["step"], in the checkpoint as in eager
    ours, theirs = compiled.state_dict(), eager.state_dict()
    assert [g["step"] for g in ours["param_groups"]] == [3]
    assert ours["param_groups"] == theirs["param_groups"]


def _clip_power(power: float) -> Any:
    return lambda step: step**power  # one code object for every power: dynamo's usual guard


def test_compiled_adopt_follows_a_new_clip_lambda() -> None:
    # A clip_lambda replaced between steps by a closure of the same code (another power):
    # the compiled step must call the new one (dynamo guards on the object, and recompiles).
    first = _model()
    models = [first, copy.deepcopy(first)]
    opts = [go.ADOPT(m.parameters(), lr=0.1, clip_lambda=_clip_power(0.25)) for m in models]
    step = torch.compile(opts[0].step, fullgraph=True)
    for s in range(5):
        if s == 3:
            for opt in opts:
                opt.clip_lambda = _clip_power(0.01)  # type: ignore[attr-defined]
        for m in models:
            _grads(m, s)
            for p in m.parameters():
                p.grad.mul_(100.0)  # type: ignore[union-attr]  # gradients the clip bites
        step()
        opts[1].step()
    for i, (a, b) in enumerate(zip(models[0].parameters(), models[1].parameters(), strict=True)):
        assert torch.equal(a, b), f"param {i}: compiled with a new clip_lambda differs from eager"


def test_untraced_callable_is_an_error() -> None:
    # A layout naming a callable this process never traced (a program compiled elsewhere).
    c = gradfuse._compile
    index = len(c._CALLABLES)
    one = [c._WRITTEN, 1, c._E_TENSOR]
    # params, grads (read), exp_avgs, exp_avg_sqs, state_steps, lr, beta1, beta2, clip_lambda
    layout = [*one, c._READ, 1, c._E_TENSOR, *one, *one, *one, c._FLOAT, c._FLOAT, c._FLOAT]
    layout += [c._CALLABLE, index]
    layout += [c._ABSENT] * (len(inspect.signature(gradfuse.functional.adopt_).parameters) - 9)
    written = [torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(())]
    with pytest.raises(ValueError, match="has not traced"):
        torch.ops.gradfuse.fused_update_(
            "adopt_", written, [torch.ones(3)], [0.1, 0.9, 0.99], [], [], layout
        )
    assert torch.count_nonzero(written[3]) == 0  # refused before anything ran


def test_callable_index_is_marked_as_dynamo_marks_it() -> None:
    """_compile marks _callable_index by hand (importing torch._dynamo for its decorator would
    slow `import gradfuse.optim` by ~1.3 s): the mark must be the one dynamo's decorator sets."""

    def f() -> None:
        return None

    marked = torch._dynamo.assume_constant_result(f)  # type: ignore[no-untyped-call]
    attrs = set(vars(marked))
    assert attrs, "assume_constant_result no longer marks by an attribute"
    for attr in attrs:
        assert getattr(gradfuse._compile._callable_index, attr) == getattr(marked, attr), attr


def test_importing_gradfuse_does_not_import_dynamo() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gradfuse, gradfuse.optim, gradfuse.nn; print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def _complex_model() -> nn.Module:
    # A complex weight with a float64 param beside it in the same group: the call's real params
    # and state go through the op as they are, the complex ones as their real views.
    torch.manual_seed(0)
    model = nn.Module()
    model.weight = nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    model.bias = nn.Parameter(torch.randn(3, dtype=torch.float64))
    return model


def _complex_grads(model: nn.Module, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)


# Every optimizer's update takes complex params as torch's do (their real views); these failed
# to compile (the traced program made the views and handed them to the in-place op).
COMPLEX_CASES = {
    "SGD": lambda ps: go.SGD(ps, lr=0.05),
    "SGD-momentum": lambda ps: go.SGD(ps, lr=0.05, momentum=0.9),  # buffers created complex
    "SGD-nesterov": lambda ps: go.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": lambda ps: go.Adam(ps, lr=1e-2),
    "AdamW": lambda ps: go.AdamW(ps, lr=1e-2, weight_decay=0.01),
    "AdamW-amsgrad": lambda ps: go.AdamW(ps, lr=1e-2, amsgrad=True),
    "RMSprop": lambda ps: go.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "ADOPT": lambda ps: go.ADOPT(ps, lr=1e-2),
    # Muon's AdamW group steps through a path of its own (Muon._adamw_step)
    "Muon-AdamW": lambda ps: go.Muon([{"params": list(ps), "use_muon": False}], lr=1e-2),
}


@pytest.mark.parametrize(
    ("case", "backend", "fullgraph"),
    [
        *((case, "inductor", True) for case in COMPLEX_CASES),
        ("SGD-momentum", "inductor", False),
        ("SGD-momentum", "aot_eager", True),
        ("Adam", "aot_eager", False),
        ("Adam", "eager", True),
    ],
)
def test_compiled_complex_step_equals_eager(case: str, backend: str, fullgraph: bool) -> None:
    eager_model = _complex_model()
    compiled_model = copy.deepcopy(eager_model)
    eager = COMPLEX_CASES[case](eager_model.parameters())
    compiled = COMPLEX_CASES[case](compiled_model.parameters())

    def step() -> None:
        compiled.step()

    compiled_step = torch.compile(step, backend=backend, fullgraph=fullgraph)
    with warnings.catch_warnings():
        # inductor: "does not support code generation for complex operators" (the copies back)
        warnings.filterwarnings("ignore", "Torchinductor does not support", UserWarning)
        for s in range(3):
            for m in (eager_model, compiled_model):
                _complex_grads(m, s)
            eager.step()
            compiled_step()
    assert not torch.equal(compiled_model.weight, _complex_model().weight)  # it stepped
    _assert_same_bits(compiled, eager, compiled_model, eager_model)
    for key, value in compiled.state[compiled_model.weight].items():
        if value.dim() > 0:  # not a step count: complex, as in eager
            assert value.dtype == torch.complex64, key


def test_functional_op_passes_opcheck() -> None:
    # gradfuse::fused_update: the update of a call with complex tensors (recorded with the
    # _REAL_VIEWS prefix), on copies of its written tensors, returned.
    c = gradfuse._compile
    p = [torch.randn(5, dtype=torch.complex128), torch.randn(3, dtype=torch.float64)]
    g = [torch.randn(5, dtype=torch.complex128), torch.randn(3, dtype=torch.float64)]
    rest = len(inspect.signature(gradfuse.functional.sgd_).parameters) - 4
    tensors2 = [c._E_TENSOR, c._E_TENSOR]
    layout = [c._REAL_VIEWS, c._WRITTEN, 2, *tensors2, c._READ, 2, *tensors2, c._NONE, c._FLOAT]
    layout += [c._ABSENT] * rest
    args = ("sgd_", p, g, [0.1], [], [], layout)
    torch.library.opcheck(torch.ops.gradfuse.fused_update.default, args)
    before = [t.clone() for t in p]
    new = torch.ops.gradfuse.fused_update(*args)
    for a, b0, gg, out in zip(p, before, g, new, strict=True):
        assert torch.equal(a, b0)  # its inputs are left as they were
        assert out.dtype == b0.dtype
        want = [b0.clone()]
        gradfuse.functional.sgd_(
            [torch.view_as_real(want[0]) if b0.is_complex() else want[0]],
            [torch.view_as_real(gg) if gg.is_complex() else gg],
            [None],
            lr=0.1,
        )
        assert torch.equal(out, want[0])


def test_traced_callables_are_not_kept_alive() -> None:
    # The table of traced callables (ADOPT's clip_lambda) must not keep a closure, and what it
    # captures, alive once the optimizer is gone.
    import gc
    import weakref

    def compiled_step() -> weakref.ref[torch.Tensor]:
        captured = torch.zeros(8)

        def clip(step: int) -> float:
            return float(captured.numel()) + step

        model = nn.Linear(3, 2)
        opt = go.ADOPT(model.parameters(), lr=1e-2, clip_lambda=clip)
        model(torch.randn(4, 3)).sum().backward()
        torch.compile(opt.step, fullgraph=True)()
        assert any(known() is clip for known in gradfuse._compile._CALLABLES)  # it was traced
        return weakref.ref(captured)

    alive = compiled_step()
    torch._dynamo.reset()
    gc.collect()
    assert alive() is None
