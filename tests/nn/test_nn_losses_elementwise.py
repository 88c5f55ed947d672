"""gradfuse.nn.functional / gradfuse.nn elementwise losses against torch.nn.functional + autograd.

Every loss x option x reduction x dtype x odd shape: the loss value, the input gradient (and
the target gradient where torch gives one) with a random, non-uniform grad_output for
reduction='none'. float16/bfloat16 follow the low-precision rule (tolerances.py).
"""

from __future__ import annotations

import itertools
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


# ---------------------------------------------------------------------------------------------
# torch.autocast, mixed dtypes, the dtypes torch refuses.


def _loss_and_grads(
    fn: Callable[..., torch.Tensor],
    case: Case,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor | None,
    pw: torch.Tensor | None,
    reduction: str,
    go: torch.Tensor | None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(loss, input grad, target grad) of one call, under autocast for ``x``'s device type when
    ``amp_dtype`` is given; the grads are None where the backward raises (torch's
    huber_loss_backward refuses operands of different dtypes)."""
    xi = x.clone().requires_grad_(True)
    yi = y.clone().requires_grad_(case.target_grad)
    amp = amp_dtype or torch.bfloat16
    with torch.autocast(x.device.type, dtype=amp, enabled=amp_dtype is not None):
        loss = call(fn, case, xi, yi, w, pw, reduction)
    g = torch.ones_like(loss) if go is None else go.reshape(loss.shape).to(loss)
    try:
        loss.backward(g)
    except RuntimeError as e:
        if "Found dtype" not in str(e):
            raise
        return loss.detach(), None, None
    return loss.detach(), xi.grad, yi.grad if case.target_grad else None


def _pair(
    case: Case, xd: torch.dtype, yd: torch.dtype, wd: torch.dtype, device: str = "cpu"
) -> tuple[Any, ...]:
    x, y, w, pw = make_inputs(case, (6, 9), torch.float64)
    return (
        x.to(device, xd),
        y.to(device, yd),
        None if w is None else w.to(device, wd),
        None if pw is None else pw.to(device, wd),
    )


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_autocast_computes_in_float32_like_torch(
    case: Case, amp_dtype: torch.dtype, device: str
) -> None:
    """Every elementwise loss is on torch.autocast's float32 list: torch casts each floating
    operand other than float64 to float32 and returns a float32 loss (float64 where an operand
    is float64); the input's gradient comes back in its own dtype through the cast. Without the
    fix gradfuse computed in the 16-bit dtype and returned a 16-bit loss. (mse / l1 with a
    weight are plain tensor arithmetic in torch.nn.functional, which CPU autocast leaves in the
    operands' dtypes, and CUDA autocast casts only in its pow and sum: so does gradfuse.)"""
    pairs = [
        (amp_dtype, amp_dtype),
        (torch.float32, amp_dtype),
        (amp_dtype, torch.float64),
        (torch.float64, amp_dtype),
    ]
    # Weighted mse / l1 in torch: on the CPU nothing is cast; on CUDA mse's pow is, and l1's
    # sum ('sum' and 'mean').
    plain = (
        case.name in ("mse_loss", "l1_loss")
        and case.weight is not None
        and (device == "cpu" or case.name == "l1_loss")
    )

    def autocast(d: torch.dtype) -> torch.dtype:
        return d if plain or d == torch.float64 else torch.float32

    for xd, yd in pairs:
        x, y, w, pw = _pair(case, xd, yd, amp_dtype, device)
        involved = {autocast(xd), autocast(yd), autocast(amp_dtype)}
        for reduction in reductions(case):
            go = torch.rand(6, 9, dtype=torch.float64) + 0.5 if reduction == "none" else None
            inv = involved
            if device == "cuda" and plain and reduction != "none":
                inv = {xd, yd, torch.float32}  # l1's elementwise loss, then the sum's float32
            if device == "cuda" and case.name == "mse_loss" and case.weight is not None:
                # torch subtracts in the operands' dtypes before its float32 pow; gradfuse
                # computes in float32 throughout: judged against float64, not torch's bits.
                inv = involved | {xd, yd}
            fns = [getattr(GF, case.name), getattr(TF, case.name)]
            ours, theirs = (
                _loss_and_grads(fn, case, x, y, w, pw, reduction, go, amp_dtype) for fn in fns
            )
            ref = _loss_and_grads(fns[1], case, *_doubles(x, y, w, pw), reduction, go)
            msg = f"{case.id} {reduction} input {xd} target {yd} under {amp_dtype} autocast"
            for k, (a, b, r) in enumerate(zip(ours, theirs, ref, strict=True)):
                if r is None:
                    assert a is None, msg
                    continue
                assert a is not None, msg
                _check_mixed(a, b, r, inv | {ours[0].dtype, a.dtype}, f"{msg} output {k}")


def _doubles(*ts: torch.Tensor | None) -> list[Any]:
    return [None if t is None else t.double() for t in ts]


MIXED_CASES = CASES  # every configuration, in every pair of dtypes


def _check_mixed(
    ours: torch.Tensor | None,
    theirs: torch.Tensor | None,
    ref: torch.Tensor | None,
    involved: set[torch.dtype],
    msg: str,
) -> None:
    """``ours`` against torch's ``theirs`` in the same dtype; ``involved``: the dtypes of the
    operands as computed, of the loss and of this output. Where they differ, torch rounds
    through each on the way (huber's elementwise loss in the input's dtype, BCE's (1 - target)
    * input in the target's, kl_div's xlogy in the target's; a cancellation may then cost it
    more than an ulp of the result), gradfuse once, from the promoted dtype: both are judged
    against the float64 run, ours to at most twice torch's error (the low-precision rule, as
    for any 16-bit result).
    Where torch's backward raises (huber_loss with operands of two dtypes), gradfuse's gradient
    is held to the float64 run at the lowest precision involved (the upstream gradient is
    rounded to the loss's dtype)."""
    assert ours is not None, msg
    assert ref is not None, msg
    if theirs is None:
        lowest = max(involved, key=lambda d: torch.finfo(d).eps)
        assert_close(ours, ref.to(ours.dtype), LOSS[lowest], f"{msg} (torch raises)")
        return
    assert ours.dtype == theirs.dtype, f"{msg}: dtype {ours.dtype}, torch's {theirs.dtype}"
    assert ours.shape == theirs.shape, msg
    if len(involved) > 1 or involved & set(LOW_PRECISION_DTYPES):
        assert_low_precision(ours, theirs, ref, msg)
    else:
        assert_close(ours, theirs, LOSS[ours.dtype], msg)


@pytest.mark.parametrize("case", MIXED_CASES, ids=lambda c: c.id)
def test_mixed_dtypes_match_torch(case: Case) -> None:
    """Every pair of float16 / bfloat16 / float32 / float64 for input and target (and, for the
    weighted losses, every weight dtype): torch's result dtype (mse / l1 / smooth_l1 / kl_div:
    the operands' promoted dtype, a weight's included; huber: the input's, promoted with a
    weight's; BCE with logits: the target's), its values, the input gradient in the input's
    dtype and the target gradient in the target's."""
    weighted = case.weight is not None or case.pos_weight is not None
    for xd, yd in itertools.product(DTYPES, DTYPES):
        for wd in DTYPES if weighted else [torch.float32]:
            x, y, w, pw = _pair(case, xd, yd, wd)
            involved = {xd, yd} | ({wd} if weighted else set())
            for reduction in reductions(case):
                go = torch.rand(6, 9, dtype=torch.float64) + 0.5 if reduction == "none" else None
                ours = _loss_and_grads(getattr(GF, case.name), case, x, y, w, pw, reduction, go)
                theirs = _loss_and_grads(getattr(TF, case.name), case, x, y, w, pw, reduction, go)
                ref = _loss_and_grads(
                    getattr(TF, case.name),
                    case,
                    x.double(),
                    y.double(),
                    None if w is None else w.double(),
                    None if pw is None else pw.double(),
                    reduction,
                    go,
                )
                msg = f"{case.id} {reduction} input {xd} target {yd} weight {wd}"
                assert ours[1] is not None
                assert ours[1].dtype == xd, msg
                if case.target_grad:
                    assert ours[2] is not None
                    assert ours[2].dtype == yd, msg
                for k in range(3):
                    if ref[k] is None:
                        assert ours[k] is None, msg
                        continue
                    _check_mixed(
                        ours[k], theirs[k], ref[k], involved | {ours[0].dtype}, f"{msg} {k}"
                    )


# (loss, input dtype, target dtype, reductions) that torch refuses in its forward, with its own
# error.
REFUSED = [
    ("l1_loss", torch.float32, torch.bool, ("mean", "sum", "none")),
    ("l1_loss", torch.bool, torch.float32, ("mean", "sum", "none")),
    ("l1_loss", torch.int64, torch.int64, ("mean",)),  # torch's mean of an integer loss
    ("smooth_l1_loss", torch.int64, torch.int64, ("mean", "sum", "none")),
    ("huber_loss", torch.int64, torch.float32, ("mean", "sum", "none")),
    ("binary_cross_entropy_with_logits", torch.float32, torch.int64, ("mean", "sum", "none")),
    ("binary_cross_entropy_with_logits", torch.float64, torch.uint8, ("mean", "sum", "none")),
    ("binary_cross_entropy_with_logits", torch.float32, torch.bool, ("mean", "sum", "none")),
    ("binary_cross_entropy_with_logits", torch.int64, torch.float32, ("mean", "sum", "none")),
    ("kl_div", torch.float32, torch.int64, ("batchmean", "sum", "none")),
    ("kl_div", torch.float32, torch.bool, ("batchmean", "sum", "none")),
    ("kl_div", torch.int32, torch.float32, ("batchmean", "sum", "none")),
]
# What torch takes although an operand is not floating point: gradfuse computes it too.
ACCEPTED = [
    ("mse_loss", torch.float32, torch.int64),
    ("mse_loss", torch.float32, torch.bool),
    ("mse_loss", torch.int64, torch.float32),
    ("l1_loss", torch.float32, torch.int64),
    ("smooth_l1_loss", torch.float32, torch.bool),
    ("huber_loss", torch.float32, torch.int64),
    ("huber_loss", torch.float32, torch.bool),
]


def _operand(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.rand(shape, dtype=dtype)
    return torch.randint(0, 2, shape).to(dtype)


@pytest.mark.parametrize(("name", "xd", "yd", "reductions"), REFUSED, ids=str)
def test_dtypes_torch_refuses_are_refused_with_its_error(
    name: str, xd: torch.dtype, yd: torch.dtype, reductions: tuple[str, ...]
) -> None:
    """An integer or bool operand torch refuses (l1: bool; BCE with logits and kl_div: integer
    or bool targets; huber, BCE and kl_div: integer inputs...) raises torch's error, type and
    message; gradfuse used to compute a loss for the targets."""
    import gradfuse.functional as gfn

    x, y = _operand(xd, (3, 4)), _operand(yd, (3, 4))
    for reduction in reductions:
        with pytest.raises(Exception) as theirs:  # noqa: PT011 - whatever torch raises
            getattr(TF, name)(x, y, reduction=reduction)
        for fn in (getattr(GF, name), getattr(gfn, f"{name}_with_grad")):
            with pytest.raises(type(theirs.value)) as ours:
                fn(x.requires_grad_(xd.is_floating_point), y, reduction=reduction)
            assert str(ours.value) == str(theirs.value), (name, reduction)
            x = x.detach()
        # numpy arrays (no torch to ask): a TypeError saying which dtypes.
        if xd is not torch.bfloat16 and yd is not torch.bfloat16:
            with pytest.raises(TypeError, match="dtype"):
                getattr(gfn, f"{name}_with_grad")(x.numpy(), y.numpy(), reduction=reduction)


@pytest.mark.parametrize(("name", "xd", "yd"), ACCEPTED, ids=str)
def test_non_float_operands_torch_accepts(name: str, xd: torch.dtype, yd: torch.dtype) -> None:
    x, y = _operand(xd, (3, 4)) * 2, _operand(yd, (3, 4))
    for reduction in ("mean", "none"):
        ours = getattr(GF, name)(x, y, reduction=reduction)
        theirs = getattr(TF, name)(x, y, reduction=reduction)
        assert ours.dtype == theirs.dtype
        assert_close(ours, theirs, LOSS[theirs.dtype], f"{name} {xd} {yd} {reduction}")


def test_nan_beta_and_delta_are_refused_like_torch() -> None:
    """torch checks beta >= 0 and delta > 0 as comparisons, which NaN fails: it raises."""
    import gradfuse.functional as gfn

    x, y = torch.randn(3, 4), torch.randn(3, 4)
    for name, kw, match in (
        ("smooth_l1_loss", {"beta": float("nan")}, "negative values for beta"),
        ("huber_loss", {"delta": float("nan")}, "non-positive values for delta"),
    ):
        for fn in (getattr(TF, name), getattr(GF, name), getattr(gfn, f"{name}_with_grad")):
            with pytest.raises(RuntimeError, match=match):
                fn(x, y, **kw)


@pytest.mark.parametrize(
    "case", [CASES[0], CASES[2], CASES[4], CASES[8], CASES[12], CASES[13]], ids=lambda c: c.id
)
def test_float16_autocast_grad_scaler_step_is_taken(case: Case) -> None:
    """float16 autocast + GradScaler (init_scale 65536), float16 targets and weights (a
    teacher's output under the same autocast): with torch's float32 loss the scaled upstream
    gradient stays finite and the step is taken; a float16 loss rounds it to inf and every step
    is skipped (the scale halves, the weights stay)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 6)
    x = torch.randn(16, 8)
    _, y, w, pw = make_inputs(case, (16, 6), torch.float16)
    runs = []
    for fn in (getattr(GF, case.name), getattr(TF, case.name)):
        m = torch.nn.Linear(8, 6)
        m.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            out = m(x)
            if case.name == "kl_div":
                out = torch.log_softmax(out.float(), dim=-1).half()
            loss = call(fn, case, out, y, w, pw, "mean")
        assert loss.dtype == torch.float32, case.id
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == 65536.0, f"{case.id}: the step was skipped"
        assert all(bool(p.grad.isfinite().all()) for p in m.parameters())
        assert not torch.equal(m.weight, model.weight), case.id
        runs.append([p.grad for p in m.parameters()])
    for ours, theirs in zip(*runs, strict=True):
        # float16 matmuls of the same float16 output gradients (each a unit of float16 at most
        # apart), accumulated in float32.
        assert_close(ours, theirs, LOSS[torch.float16], f"{case.id} param grad")
