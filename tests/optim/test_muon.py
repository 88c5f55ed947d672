"""gradfuse.optim.Muon against torch.optim.Muon (2-D params, every option) and against the
float64 reference written from the published algorithm, gradfuse.testing.Muon (any rank,
batched Newton-Schulz, the AdamW groups)."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from _more_helpers import one_torch_thread
from torch import nn

import gradfuse
from gradfuse.functional import muon_
from gradfuse.optim import AdamW, Muon, muon_param_groups
from gradfuse.testing import Muon as ReferenceMuon
from optim_testing import leaves
from tolerances import MUON_BF16_NS, TRAJECTORY, assert_close, assert_low_precision

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# 2-D shapes: square, wide, tall (transposed for the iteration), a row, a column, empty, and
# repeats so that several weights share a batch.
SHAPES_2D = [(16, 16), (7, 12), (12, 7), (16, 16), (1, 9), (9, 1), (0, 4), (12, 7), (33, 20)]
# Any rank: conv kernels and a 3-D weight beside matrices.
SHAPES_ND = [(8, 3, 3, 3), (6, 4, 5), (8, 3, 3, 3), (5, 11), (4, 2, 1, 3)]


def _problem(
    shapes: Sequence[tuple[int, ...]], steps: int, seed: int = 0
) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]]
    for _ in range(steps - 1):
        grads.append([torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes])
    return start, grads


def _run(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    dtype: torch.dtype,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    params = leaves(start, dtype)
    opt = make(params)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.to(dtype).clone()
        opt.step()
    return params, opt


def _flat(ts: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double() for t in ts])


TORCH_OPTIONS: list[dict[str, Any]] = [
    {},
    {"lr": 0.02, "nesterov": False},
    {"lr": 0.02, "adjust_lr_fn": "original"},
    {"lr": 0.01, "adjust_lr_fn": "match_rms_adamw", "weight_decay": 0.0},
    {"lr": 0.02, "momentum": 0.9, "ns_steps": 3, "weight_decay": 0.3},
    {"lr": 0.02, "ns_coefficients": (3.0, -3.2, 1.2), "eps": 1e-5, "momentum": 0.0},
    {"lr": torch.tensor(0.02), "ns_steps": 0},
]


@pytest.mark.parametrize("kw", TORCH_OPTIONS, ids=lambda kw: ",".join(map(str, kw)) or "default")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_trajectory_against_torch(kw: dict[str, Any], dtype: torch.dtype) -> None:
    start, grads = _problem(SHAPES_2D, steps=6)
    ours, _ = _run(lambda ps: Muon(ps, **kw), start, grads, dtype)
    theirs, _ = _run(lambda ps: torch.optim.Muon(ps, **kw), start, grads, dtype)
    for o, t in zip(ours, theirs, strict=True):
        assert o.dtype == dtype
        assert_close(o.detach(), t.detach(), MUON_BF16_NS[dtype], msg=str(kw))


def test_first_step_update_within_bfloat16_units_of_torchs() -> None:
    # One float32 step: the bfloat16 iteration is the same sequence of roundings as torch's, so
    # the update differs from torch's only where a float32 summation order moved a bfloat16
    # rounding: by a few bfloat16 units (2^-8) of the update's scale.
    start, grads = _problem([(64, 64), (128, 32)], steps=1)
    ours, _ = _run(lambda ps: Muon(ps, lr=0.02), start, grads, torch.float32)
    theirs, _ = _run(lambda ps: torch.optim.Muon(ps, lr=0.02), start, grads, torch.float32)
    begin = _flat([s.float() for s in start])
    ours_step, theirs_step = _flat(ours) - begin, _flat(theirs) - begin
    assert (ours_step - theirs_step).abs().max() <= 2.0**-6 * theirs_step.abs().max()
    assert (ours_step == theirs_step).double().mean() > 0.5


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust_lr_fn", [None, "match_rms_adamw"])
def test_any_rank_against_float64_reference(nesterov: bool, adjust_lr_fn: str | None) -> None:
    kw: dict[str, Any] = {
        "lr": 0.02,
        "nesterov": nesterov,
        "adjust_lr_fn": adjust_lr_fn,
        "ns_dtype": torch.float64,
    }
    start, grads = _problem(SHAPES_ND + SHAPES_2D, steps=5)
    ours, opt = _run(lambda ps: Muon(ps, **kw), start, grads, torch.float64)
    ref, _ = _run(lambda ps: ReferenceMuon(ps, **kw), start, grads, torch.float64)
    assert_close(_flat(ours), _flat(ref), TRAJECTORY[torch.float64])
    assert sorted(opt.state[ours[0]]) == ["momentum_buffer"]


def test_float32_iteration_against_reference() -> None:
    # ns_dtype=float32: the iteration in float32 matmuls (the reference runs it one matrix at a
    # time in float32 too), float32 params.
    kw: dict[str, Any] = {"lr": 0.02, "ns_dtype": torch.float32}
    start, grads = _problem(SHAPES_ND + SHAPES_2D, steps=5)
    ours, _ = _run(lambda ps: Muon(ps, **kw), start, grads, torch.float32)
    ref, _ = _run(lambda ps: ReferenceMuon(ps, **kw), start, grads, torch.float32)
    assert_close(_flat(ours), _flat(ref), MUON_BF16_NS[torch.float32])


def test_batched_equals_unbatched() -> None:
    shapes = [(24, 16)] * 5 + [(3, 4, 5)] * 3
    start, grads = _problem(shapes, steps=4)
    kw: dict[str, Any] = {"lr": 0.02}
    together, _ = _run(lambda ps: Muon(ps, **kw), start, grads, torch.float32)
    alone = []
    for i in range(len(shapes)):
        p, _ = _run(lambda ps: Muon(ps, **kw), [start[i]], [[g[i]] for g in grads], torch.float32)
        alone += p
    assert_close(_flat(together), _flat(alone), TRAJECTORY[torch.float32])


@pytest.mark.parametrize("layout", ["param", "grad"])
@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16], ids=str)
def test_any_memory_layout_equals_row_major(layout: str, state_dtype: torch.dtype | None) -> None:
    """A transposed or channels-last weight, or a gradient in such a layout (torch.optim.Muon
    takes both): the same bits as the row-major run (the Newton-Schulz input is put in the
    batch's rows whatever the momentum buffer's layout)."""
    torch.manual_seed(0)
    shapes = [(33, 5), (1, 6), (8, 4, 3, 3)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]

    def relaid(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x.clone(memory_format=torch.channels_last)
        return x.t().clone(memory_format=torch.contiguous_format).t()

    def run(permuted: bool) -> list[torch.Tensor]:
        ps = [
            (relaid(x) if permuted and layout == "param" else x.clone()).requires_grad_(True)
            for x in start
        ]
        opt = Muon(ps, lr=0.02, state_dtype=state_dtype)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = relaid(g) if permuted and layout == "grad" else g.clone()
            opt.step()
        return [p.detach() for p in ps]

    for ours, row_major in zip(run(True), run(False), strict=True):
        assert torch.equal(ours, row_major)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_params_follow_float64(dtype: torch.dtype) -> None:
    # 16-bit params and buffers: computed in float32, rounded once per stored value; within a
    # few units of the dtype of torch's own run (which rounds after every operation).
    start, grads = _problem(SHAPES_2D, steps=3)
    ours, _ = _run(lambda ps: Muon(ps, lr=0.02), start, grads, dtype)
    theirs, _ = _run(lambda ps: torch.optim.Muon(ps, lr=0.02), start, grads, dtype)
    ref, _ = _run(lambda ps: torch.optim.Muon(ps, lr=0.02), start, grads, torch.float64)
    flat = [torch.cat([t.detach().reshape(-1) for t in ts]) for ts in (ours, theirs)]
    assert_low_precision(flat[0], flat[1], _flat(ref), msg=str(dtype))


# --- the AdamW groups --------------------------------------------------------------------------


def test_adamw_groups_equal_gradfuse_adamw() -> None:
    start, grads = _problem([(6, 5), (5,), (3, 4, 2), (7,)], steps=5)
    adam_kw: dict[str, Any] = {"lr": 3e-3, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.05}
    ours, opt = _run(
        lambda ps: Muon([{"params": ps, "use_muon": False, **adam_kw}], lr=0.02),
        start,
        grads,
        torch.float32,
    )
    theirs, ref_opt = _run(lambda ps: AdamW(ps, **adam_kw), start, grads, torch.float32)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)
    assert sorted(opt.state[ours[0]]) == sorted(ref_opt.state[theirs[0]])
    # The AdamW defaults: adamw_betas / adamw_eps, not the Muon group's eps.
    group = Muon([{"params": [torch.zeros(3, requires_grad=True)], "use_muon": False}]).param_groups
    assert group[0]["betas"] == (0.9, 0.999)
    assert group[0]["eps"] == 1e-8


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.hidden = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 11)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.embed(x).transpose(1, 2)).transpose(1, 2)
        return self.head(self.norm(torch.relu(self.hidden(h))))


def test_param_groups_helper_and_mixed_model_against_reference() -> None:
    torch.manual_seed(0)
    net = _Net().double()
    groups = muon_param_groups(net, muon={"lr": 0.02}, adamw={"lr": 3e-3})
    muon_ids = {id(p) for p in groups[0]["params"]}
    assert muon_ids == {id(net.conv.weight), id(net.hidden.weight)}
    assert groups[1]["use_muon"] is False
    assert len(groups[1]["params"]) == 7
    net_ref = copy.deepcopy(net)
    opt = Muon(groups, weight_decay=0.01, ns_dtype=torch.float64)
    ref = ReferenceMuon(
        muon_param_groups(net_ref, muon={"lr": 0.02}, adamw={"lr": 3e-3}),
        weight_decay=0.01,
        ns_dtype=torch.float64,
    )
    x = torch.randint(0, 11, (4, 6))
    for model, o in ((net, opt), (net_ref, ref)):
        for _ in range(4):
            o.zero_grad()
            model(x).sum().backward()
            o.step()
    assert_close(
        _flat(list(net.parameters())), _flat(list(net_ref.parameters())), TRAJECTORY[torch.float64]
    )


def test_param_groups_helper_head_and_tied_weights() -> None:
    net = _Net()
    net.head.weight = net.embed.weight if net.head.weight.shape == (11, 8) else net.head.weight
    groups = muon_param_groups(net, head=())
    hidden = {id(p) for p in groups[0]["params"]}
    assert id(net.head.weight) in hidden  # head=(): no output layer set aside
    assert id(net.embed.weight) not in hidden


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_state_dict_interchange_with_torch(direction: str) -> None:
    start, grads = _problem([(8, 8), (12, 4)], steps=6)
    first, second = (Muon, torch.optim.Muon)
    if direction == "torch_to_ours":
        first, second = second, first
    kw: dict[str, Any] = {"lr": 0.02, "momentum": 0.9}
    params, opt = _run(lambda ps: first(ps, **kw), start, grads[:3], torch.float32)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    resumed = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = second(resumed, **kw)
    opt2.load_state_dict(loaded)
    assert sorted(opt2.state[resumed[0]]) == ["momentum_buffer"]
    for p, q in zip(params, resumed, strict=True):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[q]["momentum_buffer"])
    # Both continue: ours and torch's from the same checkpoint stay within the bf16 tolerance.
    for gs in grads[3:]:
        for ps, o in ((params, opt), (resumed, opt2)):
            for p, g in zip(ps, gs, strict=True):
                p.grad = g.float().clone()
            o.step()
    assert_close(_flat(params), _flat(resumed), MUON_BF16_NS[torch.float32])


def test_round_trip_with_adamw_group() -> None:
    start, grads = _problem([(8, 8), (8,)], steps=4)

    def make(ps: list[torch.Tensor]) -> Muon:
        return Muon([{"params": ps[:1]}, {"params": ps[1:], "use_muon": False}], lr=0.02)

    full, _ = _run(make, start, grads, torch.float64)
    params, opt = _run(make, start, grads[:2], torch.float64)
    sd = copy.deepcopy(opt.state_dict())
    resumed = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = make(resumed)
    opt2.load_state_dict(sd)
    for gs in grads[2:]:
        for p, g in zip(resumed, gs, strict=True):
            p.grad = g.clone()
        opt2.step()
    for a, b in zip(full, resumed, strict=True):
        assert torch.equal(a, b)


# --- AMP and clipping ----------------------------------------------------------------------------


def test_grad_scale_and_found_inf() -> None:
    start, grads = _problem([(8, 8), (6, 10), (5,)], steps=3)

    def make(ps: list[torch.Tensor]) -> Muon:
        return Muon(
            [{"params": ps[:2]}, {"params": ps[2:], "use_muon": False}],
            lr=0.02,
            ns_dtype=torch.float64,
        )

    plain, _ = _run(make, start, grads, torch.float64)
    params = leaves(start, torch.float64)
    opt = make(params)
    scale = torch.tensor([1024.0])
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g * 1024.0
        opt.grad_scale, opt.found_inf = scale, torch.tensor([0.0])  # type: ignore[attr-defined]
        opt.step()
        before = [p.detach().clone() for p in params]
        bufs = [v.clone() for s in opt.state.values() for v in s.values()]
        opt.found_inf = torch.tensor([1.0])  # type: ignore[attr-defined]
        opt.step()  # an inf step changes nothing
        assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
        after = [v for s in opt.state.values() for v in s.values()]
        assert all(torch.equal(a, b) for a, b in zip(bufs, after, strict=True))
    assert_close(_flat(params), _flat(plain), TRAJECTORY[torch.float64])


def test_max_grad_norm_equals_clip_then_step() -> None:
    start, grads = _problem([(8, 8), (6, 10), (5,)], steps=3)

    def groups(ps: list[torch.Tensor]) -> list[dict[str, Any]]:
        return [{"params": ps[:2]}, {"params": ps[2:], "use_muon": False}]

    ours = leaves(start, torch.float64)
    opt = Muon(groups(ours), lr=0.02, ns_dtype=torch.float64, max_grad_norm=0.5)
    ref = leaves(start, torch.float64)
    ref_opt = Muon(groups(ref), lr=0.02, ns_dtype=torch.float64)
    for gs in grads:
        for p, q, g in zip(ours, ref, gs, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        torch.nn.utils.clip_grad_norm_(ref, 0.5)
        ref_opt.step()
    # the coefficient reaches the kernels as float32 (GradScaling's clip_coef)
    assert_close(_flat(ours), _flat(ref), MUON_BF16_NS[torch.float32])


# --- bad input -----------------------------------------------------------------------------------


def _torch_error(fn: Callable[[], object]) -> tuple[type[BaseException], str]:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the error torch raises, to compare with
        return type(exc), str(exc)
    raise AssertionError("torch raised nothing")


@pytest.mark.parametrize(
    "kw",
    [
        {"lr": -1.0},
        {"momentum": -0.5},
        {"weight_decay": -0.1},
        {"adjust_lr_fn": "cosine"},
        {"lr": torch.tensor([0.1, 0.2])},
    ],
    ids=str,
)
def test_constructor_errors_are_torchs(kw: dict[str, Any]) -> None:
    p = [torch.zeros(3, 3, requires_grad=True)]
    kind, message = _torch_error(lambda: torch.optim.Muon(p, **kw))
    with pytest.raises(kind) as info:
        Muon(p, **kw)
    assert str(info.value) == message


def test_one_dim_param_in_a_muon_group() -> None:
    with pytest.raises(ValueError, match=r"2 or more dimensions.*size: torch.Size\(\[5\]\)"):
        Muon([torch.zeros(5, requires_grad=True)])
    opt = Muon([torch.zeros(3, 3, requires_grad=True)])
    with pytest.raises(ValueError, match="use_muon=False"):
        opt.add_param_group({"params": [torch.zeros(4, requires_grad=True)]})
    assert len(opt.param_groups) == 1  # nothing added
    opt.add_param_group({"params": [torch.zeros(4, requires_grad=True)], "use_muon": False})
    assert len(opt.param_groups) == 2


def _assert_nothing_written(
    params: Sequence[torch.Tensor], opt: torch.optim.Optimizer, fn: Callable[[], object]
) -> None:
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict()["state"])
    fn()
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
    after = opt.state_dict()["state"]
    assert state.keys() == after.keys()
    for k in state:
        assert all(torch.equal(state[k][n], after[k][n]) for n in state[k])


def test_complex_param_raises_torchs_error_and_writes_nothing() -> None:
    ok = torch.randn(4, 4, requires_grad=True)
    z = torch.randn(4, 4, dtype=torch.complex64, requires_grad=True)
    ok.grad, z.grad = torch.randn(4, 4), torch.randn(4, 4, dtype=torch.complex64)
    twins = [t.detach().clone().requires_grad_(True) for t in (ok, z)]
    for t, src in zip(twins, (ok, z), strict=True):
        t.grad = src.grad.clone()
    kind, message = _torch_error(lambda: torch.optim.Muon(twins).step())
    opt = Muon([ok, z])
    with pytest.raises(kind, match=re.escape(message)):
        _assert_nothing_written([ok, z], opt, opt.step)
    assert len(opt.state) == 0


def test_sparse_grad_raises_and_writes_nothing() -> None:
    p = torch.randn(4, 4, requires_grad=True)
    q = torch.randn(4, 4, requires_grad=True)
    p.grad = torch.randn(4, 4)
    q.grad = torch.randn(4, 4).to_sparse()
    opt = Muon([p, q])
    with pytest.raises(RuntimeError, match="Muon does not support sparse gradients"):
        opt.step()
    assert len(opt.state) == 0


def test_functional_errors_write_nothing() -> None:
    params = [torch.randn(4, 4), torch.randn(3, 5)]
    grads = [torch.randn(4, 4), torch.randn(3, 5)]
    bufs = [torch.randn(4, 4), torch.randn(3, 5)]
    before = [t.clone() for t in (*params, *bufs)]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ns_steps": 100}, "Number of steps must be less than 100"),
        ({"ns_coefficients": (1.0, 2.0)}, "Coefficients must be a tuple of exactly 3 values"),
        ({"adjust_lr_fn": "cosine"}, "adjust_lr_fn"),
        ({"ns_dtype": torch.float16}, "ns_dtype"),
    ]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            muon_(params, grads, bufs, **kw)
    with pytest.raises(ValueError, match=r"momentum_buffers\[1\] has shape \(5, 3\)"):
        muon_(params, grads, [bufs[0], torch.randn(5, 3)])
    with pytest.raises(ValueError, match="2 or more dimensions"):
        muon_([params[0], torch.randn(5)], [grads[0], torch.randn(5)], [bufs[0], torch.randn(5)])
    assert all(torch.equal(a, b) for a, b in zip(before, (*params, *bufs), strict=True))


def test_exported() -> None:
    assert gradfuse.optim.Muon is Muon
    assert gradfuse.functional.muon_ is muon_


def test_readme_recipe_runs() -> None:
    # The README's Muon section: its code block runs as written.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("\n## Muon\n") :]
    block = re.search(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert block is not None
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "__main__"})  # noqa: S102


@pytest.fixture
def one_rank_mesh() -> Any:
    """A 2-D one-rank CPU mesh (gloo, this process). The 2-process sharded runs are in
    tests/integrations/test_muon_sharded.py."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1, 1))
    finally:
        dist.destroy_process_group()


def test_dtensor_sharded_on_two_mesh_dims_is_refused_clearly(one_rank_mesh: Any) -> None:
    # Shards of shards (FSDP + tensor parallelism on one weight) are not gathered: a clear
    # error, nothing written, no state created.
    from torch.distributed.tensor import Shard, distribute_tensor

    place = [Shard(0), Shard(1)]
    p = nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, place))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, place)
    opt = Muon([p])
    before = p.detach().full_tensor().clone()
    with pytest.raises(NotImplementedError, match=r"params\[0\] .*Shard\(d\) on one mesh dim"):
        opt.step()
    assert torch.equal(p.detach().full_tensor(), before)
    assert len(opt.state) == 0


def test_dtensor_param_with_other_distributions_is_refused(one_rank_mesh: Any) -> None:
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    p = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Shard(0), Replicate()])
    buf = torch.zeros_like(p)
    before = p.full_tensor().clone()
    with pytest.raises(ValueError, match=r"grads\[0\] is a plain tensor"):
        muon_([p], [torch.randn(8, 4)], [buf])
    grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, [Replicate(), Shard(1)])
    with pytest.raises(ValueError, match=r"grads\[0\] is a DTensor with placements"):
        muon_([p], [grad], [buf])
    assert torch.equal(p.full_tensor(), before)
    assert torch.equal(buf.full_tensor(), torch.zeros(8, 4))


def test_dtensor_on_one_rank_equals_plain(one_rank_mesh: Any) -> None:
    # The sharded path end to end in this process (a one-rank exchange): the plain results.
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    start, grads = _problem([(12, 7), (7, 12), (12, 7), (3, 4, 5)], steps=3)
    places = [[Shard(0), Replicate()], [Replicate(), Shard(1)], [Shard(0), Replicate()]]
    places.append([Shard(2), Replicate()])
    plain, _ = _run(lambda ps: Muon(ps, lr=0.02), start, grads, torch.float32)
    ps = [
        nn.Parameter(distribute_tensor(s.float(), one_rank_mesh, pl))
        for s, pl in zip(start, places, strict=True)
    ]
    opt = Muon(ps, lr=0.02)
    for gs in grads:
        for p, g, pl in zip(ps, gs, places, strict=True):
            p.grad = distribute_tensor(g.float(), one_rank_mesh, pl)
        opt.step()
    assert_close(_flat([p.full_tensor() for p in ps]), _flat(plain), TRAJECTORY[torch.float32])


def test_dtensor_step_with_found_inf_changes_nothing(one_rank_mesh: Any) -> None:
    # A skipped step still runs the exchange (every rank must join it) but writes nothing.
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    place = [Shard(1), Replicate()]
    p = distribute_tensor(torch.randn(12, 7), one_rank_mesh, place)
    grad = distribute_tensor(torch.randn(12, 7), one_rank_mesh, place)
    buf = distribute_tensor(torch.randn(12, 7), one_rank_mesh, place)
    before = [p.full_tensor().clone(), buf.full_tensor().clone()]
    muon_([p], [grad], [buf], lr=0.1, found_inf=torch.ones(1))
    assert torch.equal(p.full_tensor(), before[0])
    assert torch.equal(buf.full_tensor(), before[1])
    muon_([p], [grad], [buf], lr=0.1, found_inf=torch.zeros(1))
    assert not torch.equal(p.full_tensor(), before[0])


@pytest.mark.parametrize(
    "options",
    [{"state_dtype": torch.bfloat16}, {"state_dtype": torch.uint8, "min_8bit_size": 0}],
    ids=["bfloat16_state", "8bit"],
)
def test_dtensor_params_refuse_precision_policies(one_rank_mesh: Any, options: Any) -> None:
    # Not supported for DTensor params yet: a clear error naming the options, nothing written,
    # no state created.
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    from gradfuse.optim import Muon8bit

    place = [Shard(0), Replicate()]
    p = nn.Parameter(distribute_tensor(torch.randn(8, 4), one_rank_mesh, place))
    p.grad = distribute_tensor(torch.randn(8, 4), one_rank_mesh, place)
    if options["state_dtype"] is torch.uint8:
        # 8-bit state refuses a sharded param when it joins the optimizer (every 8-bit class).
        with pytest.raises(
            NotImplementedError, match=r"Muon8bit: param 0 .*a DTensor .*not supported for DTensor"
        ):
            Muon8bit([p], min_8bit_size=0)
        return
    opt = Muon([p], **options)
    before = p.detach().full_tensor().clone()
    with pytest.raises(NotImplementedError, match=r"state_dtype\) are not supported for DTensor"):
        opt.step()
    assert torch.equal(p.detach().full_tensor(), before)
    assert len(opt.state) == 0
