"""gradfuse.optim.SGD against torch.optim.SGD: every option, every dtype, checkpoints both ways."""

from __future__ import annotations

import copy
import itertools
import math
import pickle

import pytest
import torch

import gradfuse
import tolerances
from conftest import DTYPES
from optim_testing import compare_with_torch, make_params, random_grads, run_trajectory

# Every valid option combination: torch refuses Nesterov without momentum or with dampening.
OPTIONS = [
    {"momentum": m, "dampening": d, "nesterov": n, "weight_decay": wd, "maximize": mx}
    for m, d, n, wd, mx in itertools.product(
        (0.0, 0.9), (0.0, 0.3), (False, True), (0.0, 0.01), (False, True)
    )
    if not (n and (m == 0.0 or d != 0.0))
]


def _ids(opts: dict[str, object]) -> str:
    return "-".join(f"{k}={v}" for k, v in opts.items())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
def test_trajectory_matches_torch(dtype: torch.dtype, opts: dict[str, float | bool]) -> None:
    compare_with_torch(
        lambda ps: gradfuse.optim.SGD(ps, lr=0.05, **opts),
        lambda ps: torch.optim.SGD(ps, lr=0.05, foreach=False, **opts),
        dtype,
        msg=_ids(opts),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_many_tensor_model(dtype: torch.dtype) -> None:
    # Layer shapes of a small transformer block stack: many tensors, one native call each step.
    shapes: list[tuple[int, ...]] = [(512, 64)]
    for _ in range(6):
        shapes += [(192, 64), (192,), (64, 64), (64,), (256, 64), (256,), (64, 256), (64,)]
        shapes += [(64,), (64,), (64,), (64,)]
    compare_with_torch(
        lambda ps: gradfuse.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-4),
        lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=1e-4, foreach=False),
        dtype,
        shapes=shapes,
        steps=20,
    )


def test_gradient_descent_tutorial() -> None:
    # f(x, y) = x^2 + 2y^2: at (1, 2) the gradient is (2, 8); one step of lr 0.1 gives (0.8, 1.2).
    xy = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = gradfuse.optim.SGD([xy], lr=0.1)

    def f() -> torch.Tensor:
        return xy[0] ** 2 + 2 * xy[1] ** 2

    f().backward()
    assert xy.grad is not None
    assert xy.grad.tolist() == [2.0, 8.0]
    opt.step()
    torch.testing.assert_close(xy.detach(), torch.tensor([0.8, 1.2]))
    for _ in range(200):
        opt.zero_grad()
        f().backward()
        opt.step()
    assert xy.detach().abs().max().item() < 1e-6


def test_isa_paths_agree_bitwise() -> None:
    # Every compiled ISA path runs the same rule without contraction: identical bits.
    core = gradfuse._native.core()
    isas = core.cpu_isas().split(",")
    active = core.cpu_isa()
    results = {}
    try:
        for dtype in DTYPES:
            params = make_params((4097, 33), dtype)
            grads = random_grads(params, 5)
            for isa in isas:
                core.set_cpu_isa(isa)
                got, _ = run_trajectory(
                    lambda ps: gradfuse.optim.SGD(
                        ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1
                    ),
                    params,
                    grads,
                )
                results[(dtype, isa)] = got
            for isa in isas[1:]:
                for a, b in zip(results[(dtype, isas[0])], results[(dtype, isa)], strict=True):
                    assert torch.equal(a, b), f"{dtype}: {isa} differs from {isas[0]}"
    finally:
        core.set_cpu_isa(active)


def test_thread_counts_agree_bitwise() -> None:
    params = make_params((1 << 17, 4097), torch.float32)
    grads = random_grads(params, 3)
    n = gradfuse.get_num_threads()
    out = []
    try:
        for threads in (1, 2, 3):
            gradfuse.set_num_threads(threads)
            out.append(
                run_trajectory(
                    lambda ps: gradfuse.optim.SGD(ps, lr=0.1, momentum=0.5), params, grads
                )[0]
            )
    finally:
        gradfuse.set_num_threads(n)
    for other in out[1:]:
        assert all(torch.equal(a, b) for a, b in zip(out[0], other, strict=True))


def test_chunked_engine_updates_every_element_exactly_once() -> None:
    # The CPU engine cuts the concatenated tensors into chunks of 2^15 elements (boundaries
    # rounded up to a multiple of 64 inside a tensor) that threads claim dynamically, stealing
    # from each other once their own run is done. Sizes that straddle chunk boundaries, tiny
    # and empty tensors, and more threads than cores (so claims race) must still update every
    # element exactly once: two momentum steps make a skipped or repeated element visible.
    sizes = (1, 7, 0, 32767, 32769, 63, 65, 4097, 100003, 1 << 16, 5, 3 * (1 << 15) + 1)
    gen = torch.Generator().manual_seed(5)
    p0 = [torch.randn(n, generator=gen) for n in sizes]
    grads = [torch.randn(n, generator=gen) for n in sizes]

    def two_steps() -> list[torch.Tensor]:
        params = [p.clone() for p in p0]
        bufs: list[torch.Tensor | None] = [None] * len(params)
        for _ in range(2):
            gradfuse.functional.sgd_(params, grads, bufs, lr=0.5, momentum=0.9)
        return params

    n = gradfuse.get_num_threads()
    try:
        gradfuse.set_num_threads(1)
        reference = two_steps()
        for threads in (2, 3, 7):
            gradfuse.set_num_threads(threads)
            for _ in range(3):
                out = two_steps()
                for size, a, b in zip(sizes, reference, out, strict=True):
                    assert torch.equal(a, b), f"{threads} threads: tensor of {size} differs"
    finally:
        gradfuse.set_num_threads(n)
    # And one thread is torch's SGD: p - lr * (g + 0.9 * g) after the two steps.
    torch_params = [p.clone().requires_grad_(True) for p in p0]
    opt = torch.optim.SGD(torch_params, lr=0.5, momentum=0.9, foreach=False)
    for _ in range(2):
        for p, g in zip(torch_params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(reference, torch_params, strict=True):
        tolerances.assert_close(a, b.detach(), tolerances.TRAJECTORY[torch.float32])


def _train(
    opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]
) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("direction", ["gradfuse->torch", "torch->gradfuse"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_state_dict_round_trip(direction: str, momentum: float) -> None:
    first, second = (
        (gradfuse.optim.SGD, torch.optim.SGD)
        if direction == "gradfuse->torch"
        else (torch.optim.SGD, gradfuse.optim.SGD)
    )
    kwargs = {"lr": 0.05, "momentum": momentum, "weight_decay": 0.01}
    params = make_params((7, (3, 5)), torch.float32)
    grads = random_grads(params, 20)

    # Reference: torch all the way.
    ref = [p.clone().requires_grad_(True) for p in params]
    _train(torch.optim.SGD(ref, foreach=False, **kwargs), ref, grads)

    ps = [p.clone().requires_grad_(True) for p in params]
    opt_a = first(ps, **kwargs)
    _train(opt_a, ps, grads[:10])
    saved = pickle.loads(pickle.dumps(opt_a.state_dict()))
    opt_b = second(ps, **kwargs)
    opt_b.load_state_dict(saved)
    assert opt_b.state_dict()["param_groups"] == opt_a.state_dict()["param_groups"]
    _train(opt_b, ps, grads[10:])
    for a, b in zip(ps, ref, strict=True):
        tolerances.assert_close(a.detach(), b.detach(), tolerances.TRAJECTORY[torch.float32])


def test_state_layout_matches_torch() -> None:
    params = make_params((3, 4), torch.float64)
    grads = random_grads(params, 2)
    _, ours_opt = run_trajectory(
        lambda ps: gradfuse.optim.SGD(ps, lr=0.1, momentum=0.9), params, grads
    )
    _, theirs_opt = run_trajectory(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), params, grads
    )
    a, b = ours_opt.state_dict(), theirs_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys()
        tolerances.assert_close(
            a["state"][k]["momentum_buffer"],
            b["state"][k]["momentum_buffer"],
            tolerances.TRAJECTORY[torch.float64],
        )


@pytest.mark.parametrize(
    "make_sched",
    [
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=12),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=5),
    ],
    ids=["StepLR", "OneCycleLR", "CosineAnnealingLR"],
)
def test_lr_schedulers(make_sched: object) -> None:
    params = make_params((7, 11), torch.float64)
    grads = random_grads(params, 12)
    finals = []
    for cls in (gradfuse.optim.SGD, torch.optim.SGD):
        ps = [p.clone().requires_grad_(True) for p in params]
        opt = cls(ps, lr=0.05, momentum=0.9)
        sched = make_sched(opt)  # type: ignore[operator]
        lrs = []
        for gs in grads:
            for p, g in zip(ps, gs, strict=True):
                p.grad = g.clone()
            opt.step()
            sched.step()
            lrs.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
        finals.append(([p.detach() for p in ps], lrs))
    assert finals[0][1] == finals[1][1]
    for a, b in zip(finals[0][0], finals[1][0], strict=True):
        tolerances.assert_close(a, b, tolerances.TRAJECTORY[torch.float64])


def test_tensor_lr() -> None:
    compare_with_torch(
        lambda ps: gradfuse.optim.SGD(ps, lr=torch.tensor(0.05), momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=torch.tensor(0.05), momentum=0.9, foreach=False),
        torch.float32,
    )


def test_mixed_dtypes_in_one_optimizer() -> None:
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64]
    params = [torch.randn(33, dtype=d) for d in dtypes]
    grads = [[torch.randn(33, dtype=d) for d in dtypes] for _ in range(10)]
    ours, _ = run_trajectory(lambda ps: gradfuse.optim.SGD(ps, lr=0.1, momentum=0.9), params, grads)
    want, _ = run_trajectory(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False), params, grads
    )
    for a, b in zip(ours, want, strict=True):
        tolerances.assert_close(a, b, tolerances.TRAJECTORY[a.dtype])


def test_param_groups_and_params_without_grad() -> None:
    a, b, c = (torch.randn(5, requires_grad=True) for _ in range(3))
    opt = gradfuse.optim.SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    a.grad = torch.ones(5)
    c.grad = torch.ones(5)
    b0, a0, c0 = b.detach().clone(), a.detach().clone(), c.detach().clone()
    opt.step()
    assert torch.equal(b.detach(), b0)  # no grad: untouched, no state
    assert b not in opt.state
    torch.testing.assert_close(a.detach(), a0 - 0.1)
    torch.testing.assert_close(c.detach(), c0 - 0.5)


def test_hooks_zero_grad_and_closure() -> None:
    p = torch.randn(4, requires_grad=True)
    opt = gradfuse.optim.SGD([p], lr=0.1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == ["pre", "post"]
    assert isinstance(loss, torch.Tensor)
    opt.zero_grad()
    assert p.grad is None


def test_non_contiguous_layouts() -> None:
    # A transposed (dense, permuted) param and a gradient laid out differently from it.
    base = torch.randn(64, 48)
    ours = base.t().clone().t().requires_grad_(True)  # stride (1, 64): dense, not contiguous
    theirs = ours.detach().clone().requires_grad_(True)
    g = torch.randn(64, 48)  # contiguous: different strides from the param
    ours.grad, theirs.grad = g.clone(), g.clone()
    gradfuse.optim.SGD([ours], lr=0.1, momentum=0.9).step()
    torch.optim.SGD([theirs], lr=0.1, momentum=0.9, foreach=False).step()
    tolerances.assert_close(ours.detach(), theirs.detach(), tolerances.STEP[torch.float32])


def test_sparse_gradients_fall_back_to_torch() -> None:
    emb_a = torch.nn.Embedding(10, 3, sparse=True)
    emb_b = torch.nn.Embedding(10, 3, sparse=True)
    emb_b.load_state_dict(emb_a.state_dict())
    idx = torch.tensor([1, 4, 4, 9])
    for emb, cls in ((emb_a, gradfuse.optim.SGD), (emb_b, torch.optim.SGD)):
        opt = cls(emb.parameters(), lr=0.1)
        emb(idx).sum().backward()
        opt.step()
    torch.testing.assert_close(emb_a.weight, emb_b.weight, rtol=0, atol=0)


BAD_CONSTRUCTOR_ARGS = [
    {"lr": -0.1},
    {"lr": 0.1, "momentum": -0.5},
    {"lr": 0.1, "weight_decay": -1.0},
    {"lr": 0.1, "nesterov": True},
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
    {"lr": torch.tensor([0.1, 0.2])},
    {"lr": 0.1, "fused": True, "foreach": True},
]


@pytest.mark.parametrize("kwargs", BAD_CONSTRUCTOR_ARGS, ids=lambda k: ",".join(map(str, k)))
def test_constructor_errors_match_torch(kwargs: dict[str, object]) -> None:
    p = [torch.randn(3, requires_grad=True)]
    with pytest.raises(Exception) as theirs:  # noqa: PT011 - whatever torch raises, we match
        torch.optim.SGD(p, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(type(theirs.value)) as ours:
        gradfuse.optim.SGD(p, **kwargs)  # type: ignore[arg-type]
    assert str(ours.value) == str(theirs.value)


def test_empty_param_list_matches_torch() -> None:
    with pytest.raises(ValueError, match="empty parameter list"):
        gradfuse.optim.SGD([], lr=0.1)


def test_defaults_match_torch() -> None:
    p = [torch.randn(3, requires_grad=True)]
    assert gradfuse.optim.SGD(p).defaults == torch.optim.SGD(p).defaults


def test_differentiable_is_refused_clearly() -> None:
    with pytest.raises(NotImplementedError, match="differentiable=True is not supported"):
        gradfuse.optim.SGD([torch.randn(3, requires_grad=True)], lr=0.1, differentiable=True)


@pytest.mark.parametrize("opts", OPTIONS, ids=_ids)
def test_nan_and_inf_propagate_like_torch(opts: dict[str, float | bool]) -> None:
    p = torch.tensor([1.0, math.inf, -math.inf, math.nan, 2.0, 0.0, -0.0])
    g = torch.tensor([math.nan, 1.0, 1.0, 1.0, math.inf, -math.inf, 0.0])
    ours, _ = run_trajectory(lambda ps: gradfuse.optim.SGD(ps, lr=0.1, **opts), [p], [[g], [g]])
    want, _ = run_trajectory(
        lambda ps: torch.optim.SGD(ps, lr=0.1, foreach=False, **opts), [p], [[g], [g]]
    )
    torch.testing.assert_close(ours[0], want[0], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("nesterov", [False, True])
def test_complex_momentum_buffer_is_torchs(nesterov: bool) -> None:
    """A complex param's momentum buffer is complex, of the param's shape, as torch keeps it (the
    update works on real views; the buffer it creates was kept as one), so checkpoints go both
    ways."""
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(5, 3, dtype=torch.complex64, generator=gen)
    grads = [torch.randn(5, 3, dtype=torch.complex64, generator=gen) for _ in range(4)]
    kw = {"lr": 0.1, "momentum": 0.9, "nesterov": nesterov}
    a, b = p0.clone().requires_grad_(True), p0.clone().requires_grad_(True)
    ours = gradfuse.optim.SGD([a], **kw)
    theirs = torch.optim.SGD([b], **kw, foreach=False)
    for g in grads[:2]:
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    buf, want = ours.state[a]["momentum_buffer"], theirs.state[b]["momentum_buffer"]
    assert (buf.dtype, buf.shape) == (want.dtype, want.shape)
    tolerances.assert_close(buf, want, tolerances.STEP[torch.float32])
    # Each continues from the other's checkpoint (copied: loading shares the tensors).
    a2, b2 = b.detach().clone().requires_grad_(True), a.detach().clone().requires_grad_(True)
    ours2 = gradfuse.optim.SGD([a2], **kw)
    ours2.load_state_dict(copy.deepcopy(theirs.state_dict()))
    theirs2 = torch.optim.SGD([b2], **kw, foreach=False)
    theirs2.load_state_dict(copy.deepcopy(ours.state_dict()))
    for g in grads[2:]:
        for p, opt in ((a, ours), (b, theirs), (a2, ours2), (b2, theirs2)):
            p.grad = g.clone()
            opt.step()
    tolerances.assert_close(a2.detach(), b.detach(), tolerances.TRAJECTORY[torch.float32])
    tolerances.assert_close(b2.detach(), a.detach(), tolerances.TRAJECTORY[torch.float32])
