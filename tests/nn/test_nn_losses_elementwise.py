"""gradfuse.nn.functional / gradfuse.nn elementwise losses against torch.nn.functional + autograd.

Every loss x option x reduction x dtype x odd shape: the loss value, the input gradient (and
the target gradient where torch gives one) with a random, non-uniform grad_output for
reduction='none'. float16/bfloat16 follow the low-precision rule (tolerances.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import gradfuse
import gradfuse.nn as gnn
import gradfuse.nn.functional as GF
from tolerances import (
    GRADCHECK,
    GRADCHECK_EPS,
    LOSS,
    LOW_PRECISION_DTYPES,
    assert_close,
    assert_low_precision,
)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(1,), (7,), (4097,), (0,), (3, 5, 2)]


@dataclass
class Case:
    """One loss configuration: names, keyword options and how to draw inputs."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    weight: str | None = None  # None, "full" (input's shape) or "last" (the last dim)
    pos_weight: str | None = None
    target_grad: bool = True  # torch and gradfuse both give a gradient w.r.t. target

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}[{opts},w={self.weight},pw={self.pos_weight}]"


CASES = [
    Case("mse_loss"),
    Case("mse_loss", weight="full"),
    Case("l1_loss"),
    Case("l1_loss", weight="full"),
    Case("smooth_l1_loss", {"beta": 1.0}),
    Case("smooth_l1_loss", {"beta": 0.25}),
    Case("smooth_l1_loss", {"beta": 0.0}),
    Case("huber_loss", {"delta": 1.0}),
    Case("huber_loss", {"delta": 0.3}, weight="full"),
    Case("binary_cross_entropy_with_logits", target_grad=False),
    Case("binary_cross_entropy_with_logits", weight="last", target_grad=False),
    Case("binary_cross_entropy_with_logits", pos_weight="last", target_grad=False),
    Case("binary_cross_entropy_with_logits", weight="full", pos_weight="full", target_grad=False),
    Case("kl_div", {"log_target": False}, target_grad=False),
    Case("kl_div", {"log_target": True}, target_grad=False),
]


def reductions(case: Case) -> list[str]:
    return (
        ["none", "mean", "sum", "batchmean"] if case.name == "kl_div" else ["none", "mean", "sum"]
    )


def make_inputs(
    case: Case, shape: tuple[int, ...], dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Fresh random inputs (never zeros), kept away from each loss's kinks."""
    x = torch.randn(shape, dtype=torch.float64) * 2
    if case.name == "binary_cross_entropy_with_logits":
        x = x * 3
        y = torch.rand(shape, dtype=torch.float64)
    elif case.name == "kl_div":
        if len(shape) > 0 and shape[-1] > 0:
            x = torch.log_softmax(x, dim=-1)
            y = torch.softmax(torch.randn(shape, dtype=torch.float64), dim=-1)
        else:
            y = torch.rand(shape, dtype=torch.float64)
        if case.kwargs.get("log_target"):
            y = torch.log(y)
        elif y.numel() > 2:
            y.view(-1)[::3] = 0.0  # xlogy(0, 0) = 0: zero targets contribute nothing
    else:
        y = torch.randn(shape, dtype=torch.float64) * 2
    w = pw = None
    if case.weight == "full":
        w = torch.rand(shape, dtype=torch.float64) + 0.5
    elif case.weight == "last":
        w = torch.rand(shape[-1:], dtype=torch.float64) + 0.5
    if case.pos_weight == "full":
        pw = torch.rand(shape, dtype=torch.float64) * 3 + 0.1
    elif case.pos_weight == "last":
        pw = torch.rand(shape[-1:], dtype=torch.float64) * 3 + 0.1
    cast = [t if t is None else t.to(dtype) for t in (x, y, w, pw)]
    return cast[0], cast[1], cast[2], cast[3]  # type: ignore[return-value]


def call(
    fn: Callable[..., torch.Tensor],
    case: Case,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    pw: torch.Tensor | None,
    reduction: str,
) -> torch.Tensor:
    kw = dict(case.kwargs)
    if w is not None:
        kw["weight"] = w
    if pw is not None:
        kw["pos_weight"] = pw
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="reduction: 'mean' divides")
        return fn(x, y, reduction=reduction, **kw)


def run_both(
    case: Case,
    reduction: str,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    pw: torch.Tensor | None,
    grad_out_seed: torch.Tensor | None = None,
) -> dict[str, list[torch.Tensor | None]]:
    """Loss, input grad and target grad from gradfuse and torch on the same inputs."""
    out: dict[str, list[torch.Tensor | None]] = {}
    for tag, fn in (("ours", getattr(GF, case.name)), ("torch", getattr(TF, case.name))):
        xi = x.clone().requires_grad_(True)
        yi = y.clone().requires_grad_(case.target_grad)
        loss = call(fn, case, xi, yi, w, pw, reduction)
        g = torch.ones_like(loss) if grad_out_seed is None else grad_out_seed.to(loss.dtype)
        if loss.numel() > 0 or loss.dim() == 0:
            loss.backward(g if loss.dim() > 0 else g.reshape(()))
        out[tag] = [loss.detach(), xi.grad, yi.grad if case.target_grad else None]
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_against_torch(case: Case, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x, y, w, pw = make_inputs(case, shape, dtype)
    for reduction in reductions(case):
        go = torch.rand(shape, dtype=torch.float64) + 0.5 if reduction == "none" else None
        res = run_both(case, reduction, x, y, w, pw, go)
        msg = f"{case.id} {reduction} {shape} {dtype}"
        if dtype in LOW_PRECISION_DTYPES:
            ref = run_both(
                case,
                reduction,
                x.double(),
                y.double(),
                None if w is None else w.double(),
                None if pw is None else pw.double(),
                go,
            )["torch"]
            for k, (ours, theirs, r) in enumerate(zip(res["ours"], res["torch"], ref, strict=True)):
                if theirs is None:
                    assert ours is None
                    continue
                assert ours is not None
                assert r is not None
                assert ours.dtype == theirs.dtype, msg
                assert ours.shape == theirs.shape, msg
                if torch.isnan(r).any():
                    assert torch.equal(torch.isnan(ours), torch.isnan(r)), msg
                    continue
                assert_low_precision(ours, theirs, r, f"{msg} output {k}")
        else:
            for k, (ours, theirs) in enumerate(zip(res["ours"], res["torch"], strict=True)):
                if theirs is None:
                    assert ours is None, msg
                    continue
                assert ours is not None
                assert ours.dtype == theirs.dtype, msg
                assert ours.shape == theirs.shape, msg
                assert_close(ours, theirs, LOSS[dtype], f"{msg} output {k}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_gradcheck_float64(case: Case) -> None:
    x, y, w, pw = make_inputs(case, (3, 4), torch.float64)
    for reduction in reductions(case):

        def f(xi: torch.Tensor, yi: torch.Tensor, reduction: str = reduction) -> torch.Tensor:
            return call(getattr(GF, case.name), case, xi, yi, w, pw, reduction)

        xi = x.clone().requires_grad_(True)
        yi = y.clone().requires_grad_(case.target_grad)
        assert torch.autograd.gradcheck(
            f, (xi, yi), eps=GRADCHECK_EPS, atol=GRADCHECK.atol, rtol=GRADCHECK.rtol
        ), f"{case.id} {reduction}"


@pytest.mark.parametrize("case", CASES[:1] + CASES[9:10] + CASES[13:14], ids=lambda c: c.id)
def test_double_backward_raises(case: Case) -> None:
    x, y, w, pw = make_inputs(case, (5,), torch.float64)
    xi = x.clone().requires_grad_(True)
    loss = call(getattr(GF, case.name), case, xi, y, w, pw, "sum")
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, xi, create_graph=True)
    (g,) = torch.autograd.grad(loss, xi)  # a first derivative still works
    assert g.shape == xi.shape


@pytest.mark.parametrize("name", ["binary_cross_entropy_with_logits", "kl_div"])
def test_target_grad_is_a_clear_error(name: str) -> None:
    x = torch.randn(4, requires_grad=True)
    y = torch.rand(4, requires_grad=True)
    with pytest.raises(NotImplementedError, match="gradient with respect to target"):
        getattr(GF, name)(x, y, reduction="sum")
    # Detached targets work.
    getattr(GF, name)(x, y.detach(), reduction="sum").backward()
    assert x.grad is not None


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_broadcast_target_warns_like_torch(name: str, reduction: str) -> None:
    """A target of another shape: torch warns and broadcasts; so does gradfuse (same values,
    input and target gradients summed back to their own shapes)."""
    x = torch.randn(3, 1, dtype=torch.float64)
    y = torch.randn(4, dtype=torch.float64)
    res: dict[str, list[torch.Tensor]] = {}
    for tag, fn in (("ours", getattr(GF, name)), ("torch", getattr(TF, name))):
        xi, yi = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        with pytest.warns(UserWarning, match="Using a target size"):
            loss = fn(xi, yi, reduction=reduction)
        loss.backward(torch.arange(loss.numel(), dtype=loss.dtype).reshape(loss.shape) + 1)
        assert xi.grad is not None
        assert yi.grad is not None
        res[tag] = [loss.detach(), xi.grad, yi.grad]
    for ours, theirs in zip(res["ours"], res["torch"], strict=True):
        assert_close(ours, theirs, LOSS[torch.float64], f"{name} {reduction}")


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "huber_loss"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weight_with_broadcast_target(name: str, reduction: str) -> None:
    """A weight of the input's shape and a target that broadcasts the input: torch's weighted
    'mean' of mse/l1 divides by the weight's own sum, not by its sum over the broadcast copies."""
    x = torch.randn(3, 1, dtype=torch.float64)
    y = torch.randn(3, 4, dtype=torch.float64)
    w = torch.rand(3, 1, dtype=torch.float64) + 0.5
    res: dict[str, list[torch.Tensor]] = {}
    for tag, fn in (("ours", getattr(GF, name)), ("torch", getattr(TF, name))):
        xi = x.clone().requires_grad_(True)
        with pytest.warns(UserWarning, match="Using a target size"):
            loss = fn(xi, y, reduction=reduction, weight=w)
        loss.backward(
            torch.rand(loss.shape, dtype=loss.dtype, generator=torch.Generator().manual_seed(0))
        )
        assert xi.grad is not None
        res[tag] = [loss.detach(), xi.grad]
    for ours, theirs in zip(res["ours"], res["torch"], strict=True):
        assert_close(ours, theirs, LOSS[torch.float64], f"{name} {reduction}")


@pytest.mark.parametrize(
    ("name", "grad_of"),
    [
        ("binary_cross_entropy_with_logits", "target"),
        ("kl_div", "target"),
        ("binary_cross_entropy_with_logits", "weight"),
        ("mse_loss", "weight"),
    ],
)
def test_no_grad_mode_takes_any_requires_grad(name: str, grad_of: str) -> None:
    """Under torch.no_grad() no gradient is asked for: a target or weight that requires grad
    (a teacher's output in an evaluation loop) is computed as torch computes it, not refused."""
    x = torch.randn(5, 3)
    y = torch.rand(5, 3, requires_grad=grad_of == "target")
    w = torch.rand(5, 3, requires_grad=grad_of == "weight")
    kwargs: dict[str, Any] = {"reduction": "batchmean"} if name == "kl_div" else {"weight": w}
    with torch.no_grad():
        ours = getattr(GF, name)(x, y, **kwargs)
        theirs = getattr(TF, name)(x, y, **kwargs)
    assert_close(ours, theirs, LOSS[torch.float32], name)
    with pytest.raises(NotImplementedError, match=f"gradient with respect to {grad_of}"):
        getattr(GF, name)(x.requires_grad_(True), y, **kwargs)


def test_shape_errors_match_torch() -> None:
    x, y = torch.randn(3, 4), torch.rand(3, 5)
    for fn in (GF.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits):
        with pytest.raises(ValueError, match=r"Target size \(torch.Size\(\[3, 5\]\)\) must be"):
            fn(x, y)
    for fn in (GF.mse_loss, TF.mse_loss):
        with pytest.raises(ValueError, match="Weights and input must have the same size"):
            fn(x, torch.rand(3, 4), weight=torch.rand(4))
    for name in ("mse_loss", "l1_loss"):
        for fn in (getattr(GF, name), getattr(TF, name)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(RuntimeError):
                    fn(x, y)
    for fn in (GF.huber_loss, TF.huber_loss):
        with pytest.raises(RuntimeError, match="non-positive values for delta"):
            fn(x, x.clone(), delta=0.0)
    for fn in (GF.smooth_l1_loss, TF.smooth_l1_loss):
        with pytest.raises(RuntimeError, match="negative values for beta"):
            fn(x, x.clone(), beta=-1.0)
    for fn in (GF.mse_loss, TF.mse_loss):
        with pytest.raises(ValueError, match="is not a valid value for reduction"):
            fn(x, x.clone(), reduction="avg")


@pytest.mark.parametrize(
    "legacy", [(None, False), (False, None), (True, True), (False, True), (None, True)]
)
def test_legacy_size_average_reduce(legacy: tuple[bool | None, bool | None]) -> None:
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    p = torch.softmax(y, dim=-1)
    for name, target in (("mse_loss", y), ("l1_loss", y), ("smooth_l1_loss", y), ("kl_div", p)):
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            ours = getattr(GF, name)(x, target, size_average=legacy[0], reduce=legacy[1])
        with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
            theirs = getattr(TF, name)(x, target, size_average=legacy[0], reduce=legacy[1])
        assert_close(ours, theirs, LOSS[torch.float64], name)


def test_kl_div_mean_warns_like_torch() -> None:
    x, y = torch.log_softmax(torch.randn(2, 3), -1), torch.softmax(torch.randn(2, 3), -1)
    with pytest.warns(UserWarning, match="reduction: 'mean' divides the total loss"):
        GF.kl_div(x, y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_empty(case: Case) -> None:
    x, y, w, pw = make_inputs(case, (0, 3), torch.float32)
    for reduction in reductions(case):
        res = run_both(case, reduction, x, y, w, pw)
        for ours, theirs in zip(res["ours"], res["torch"], strict=True):
            if theirs is None:
                continue
            assert ours is not None
            assert ours.shape == theirs.shape
            assert ours.dtype == theirs.dtype
            assert torch.equal(torch.isnan(ours), torch.isnan(theirs)), (case.id, reduction)
            assert_close(ours, theirs, LOSS[torch.float32], f"{case.id} {reduction}")


@pytest.mark.parametrize("name", ["mse_loss", "huber_loss", "binary_cross_entropy_with_logits"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_deterministic_across_threads_and_runs(name: str, reduction: str) -> None:
    n = 300_001
    x = torch.randn(n)
    y = torch.rand(n) if name.startswith("binary") else torch.randn(n)
    before = gradfuse.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1, 2):
            gradfuse.set_num_threads(threads)
            xi = x.clone().requires_grad_(True)
            loss = getattr(GF, name)(xi, y, reduction=reduction)
            loss.backward()
            assert xi.grad is not None
            results.append((loss.detach(), xi.grad))
    finally:
        gradfuse.set_num_threads(before)
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert torch.equal(grad, results[0][1])


def test_no_grad_path_and_input_untouched() -> None:
    x, y = torch.randn(100), torch.randn(100)
    x0 = x.clone()
    with torch.no_grad():
        loss = GF.mse_loss(x, y)
    assert torch.equal(x, x0)
    assert_close(loss, TF.mse_loss(x, y), LOSS[torch.float32])


def test_modules_match_torch() -> None:
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.randn(4, 5, dtype=torch.float64)
    t = torch.rand(4, 5, dtype=torch.float64)
    p = torch.softmax(torch.randn(4, 5, dtype=torch.float64), -1)
    w, pw = torch.rand(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
    pairs: list[tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]] = [
        (gnn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"), y),
        (gnn.L1Loss(), torch.nn.L1Loss(), y),
        (gnn.SmoothL1Loss(beta=0.5), torch.nn.SmoothL1Loss(beta=0.5), y),
        (gnn.HuberLoss(delta=0.7), torch.nn.HuberLoss(delta=0.7), y),
        (
            gnn.BCEWithLogitsLoss(weight=w, pos_weight=pw),
            torch.nn.BCEWithLogitsLoss(weight=w, pos_weight=pw),
            t,
        ),
        (gnn.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean"), p),
    ]
    for ours_m, theirs_m, target in pairs:
        assert isinstance(ours_m, type(theirs_m))
        assert ours_m.state_dict().keys() == theirs_m.state_dict().keys()
        assert repr(ours_m) == repr(theirs_m)
        xs = torch.log_softmax(x, -1) if isinstance(ours_m, torch.nn.KLDivLoss) else x
        res = []
        for m in (ours_m, theirs_m):
            xi = xs.clone().requires_grad_(True)
            loss = m(xi, target)
            loss.backward()
            res.append((loss.detach(), xi.grad))
        assert_close(res[0][0], res[1][0], LOSS[torch.float64], repr(ours_m))
        assert res[0][1] is not None
        assert res[1][1] is not None
        assert_close(res[0][1], res[1][1], LOSS[torch.float64], repr(ours_m))


def test_tutorial_linear_regression() -> None:
    """nn.Linear(3, 1) on a batch of 10 with MSELoss: same weight.grad and bias.grad as torch."""
    x = torch.randn(10, 3)
    y = torch.randn(10, 1)
    grads = []
    for loss_fn in (gnn.MSELoss(), torch.nn.MSELoss()):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        loss = loss_fn(model(x), y)
        loss.backward()
        assert model.weight.grad is not None
        assert model.bias.grad is not None
        grads.append((loss.detach(), model.weight.grad, model.bias.grad))
    for ours, theirs in zip(grads[0], grads[1], strict=True):
        assert_close(ours, theirs, LOSS[torch.float32], "Linear(3, 1) + MSELoss")


@pytest.mark.cuda
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cuda_matches_cpu(case: Case) -> None:
    """Same inputs through the CPU and the CUDA kernels: loss and input gradient (one rule)."""
    from tolerances import CPU_VS_CUDA

    def dev(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.cuda()

    for dtype in DTYPES:
        x, y, w, pw = make_inputs(case, (33, 129), dtype)
        for reduction in reductions(case):
            res = []
            for xs, ys, ws, pws in ((x, y, w, pw), (dev(x), dev(y), dev(w), dev(pw))):
                assert xs is not None
                assert ys is not None
                xi = xs.clone().requires_grad_(True)
                loss = call(getattr(GF, case.name), case, xi, ys, ws, pws, reduction)
                loss.backward(torch.ones_like(loss))
                assert xi.grad is not None
                res.append((loss.detach().cpu(), xi.grad.cpu()))
            msg = f"{case.id} {reduction} {dtype}"
            assert_close(res[1][0], res[0][0], CPU_VS_CUDA[dtype], msg)
            assert_close(res[1][1], res[0][1], CPU_VS_CUDA[dtype], msg)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_backward_twice_and_accumulation(reduction: str) -> None:
    """retain_graph: a second backward gives the same gradient again (accumulated), also after
    the first one handed the saved buffer to autograd; the input is never modified."""
    x, y = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    res = []
    go = torch.ones(()) if reduction != "none" else torch.rand(50, dtype=torch.float64)
    for fn in (GF.huber_loss, TF.huber_loss):
        xi = x.clone().requires_grad_(True)
        loss = fn(xi, y, reduction=reduction)
        loss.backward(go.to(loss.dtype), retain_graph=True)
        assert xi.grad is not None
        first = xi.grad.clone()
        loss.backward(go.to(loss.dtype))
        res.append((first, xi.grad.clone()))
        assert torch.equal(xi.detach(), x)
    for ours, theirs in zip(res[0], res[1], strict=True):
        assert_close(ours, theirs, LOSS[torch.float64], reduction)
