"""gradfuse.nn.functional.cross_entropy / nll_loss and the modules, against torch.

Values against torch.nn.functional, input (and probability-target) gradients against
torch.autograd with a random upstream gradient, for every option combination, dtype and odd
shape; float16/bfloat16 by the error-relative rule against a float64 run.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import gradfuse.functional
import gradfuse.nn
import gradfuse.nn.functional as gnf
import tolerances
from conftest import DTYPES

# (input shape, class dim size): odd class counts, unbatched, K-dimensional, empty batch.
SHAPES = [(5, 1), (6, 7), (3, 4097), (7,), (2, 7, 3, 5), (3, 4, 1, 2, 3), (0, 7)]
SHAPE_IDS = ["C1", "C7", "C4097", "unbatched", "kdim2", "kdim3", "empty"]
REDUCTIONS = ["none", "mean", "sum"]


def _classes(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) == 1 else shape[1]


def _target_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return () if len(shape) == 1 else (shape[0], *shape[2:])


def _class_target(shape: tuple[int, ...], ignore: str) -> tuple[torch.Tensor, int]:
    """Random class indices; with ignore != 'off' about a third of them set to ignore_index
    (-100, torch's default, or a valid class, which is then ignored everywhere)."""
    c = _classes(shape)
    t = torch.randint(0, c, _target_shape(shape))
    ignore_index = -100
    if ignore == "valid":
        ignore_index = min(1, c - 1)
    if ignore != "off" and t.numel():
        mask = torch.rand(t.shape) < 0.35
        t = torch.where(mask, torch.full_like(t, ignore_index), t)
    return t, ignore_index


def _prob_target(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    cd = 0 if len(shape) == 1 else 1
    return torch.softmax(torch.randn(shape, dtype=torch.float64), dim=cd).to(dtype)


def _upstream(loss: torch.Tensor) -> torch.Tensor:
    """A fresh random grad_output (non-uniform for reduction='none')."""
    return torch.rand(loss.shape, dtype=loss.dtype) + 0.5


def _run(fn: Any, x: torch.Tensor, t: torch.Tensor, go: torch.Tensor | None, **kw: Any) -> Any:
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, t, **kw)
    if go is None:
        go = _upstream(loss)
    loss.backward(go)
    return loss.detach(), x.grad, go


def _compare(ours: Any, theirs: Any, ref: Any, dtype: torch.dtype, what: str) -> None:
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        nan = torch.isnan(ref)
        assert torch.equal(torch.isnan(ours), nan), f"{what}: NaN pattern differs"
        tolerances.assert_low_precision(ours[~nan], theirs[~nan], ref[~nan], what)
    elif dtype == torch.float32:
        # Against the float64 run, not torch's float32 one: torch's float32 gradient takes
        # exp(log_softmax) and so carries an error of |lse| ulps (up to ~1e-6 here), while the
        # fused kernel's is a few ulps. Where p_y -> 1 the target-class gradient c_y (p_y - 1)
        # cancels in any float32 computation (torch's included): there the error may be up to
        # twice torch's own, the rule 16-bit results are held to.
        try:
            tolerances.assert_close(ours, ref.to(dtype), tolerances.LOSS[dtype], what)
        except AssertionError:
            nan = torch.isnan(ref)
            assert torch.equal(torch.isnan(ours), nan), f"{what}: NaN pattern differs"
            tolerances.assert_low_precision(ours[~nan], theirs[~nan], ref[~nan], what)
    else:
        tolerances.assert_close(ours, theirs, tolerances.LOSS[dtype], what)


def _check(torch_fn: Any, our_fn: Any, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> None:
    dtype = x.dtype
    loss, grad, go = _run(our_fn, x, t, None, **kw)
    t_loss, t_grad, _ = _run(torch_fn, x, t, go, **kw)
    assert loss.dtype == t_loss.dtype
    assert loss.shape == t_loss.shape
    assert grad.dtype == dtype
    assert grad.shape == x.shape
    ref_loss = ref_grad = None
    if dtype != torch.float64:
        kw64 = dict(kw)
        if kw64.get("weight") is not None:
            kw64["weight"] = kw64["weight"].double()
        t64 = t.double() if t.is_floating_point() else t
        ref_loss, ref_grad, _ = _run(torch_fn, x.double(), t64, go.double(), **kw64)
    _compare(loss, t_loss, ref_loss, dtype, "loss")
    _compare(grad, t_grad, ref_grad, dtype, "grad")


def _check_reductions(
    torch_fn: Any, our_fn: Any, x: torch.Tensor, t: torch.Tensor, **kw: Any
) -> None:
    """:func:`_check` for every reduction."""
    for reduction in REDUCTIONS:
        _check(torch_fn, our_fn, x, t, reduction=reduction, **kw)


def _class_weight(
    shape: tuple[int, ...], dtype: torch.dtype, weighted: bool
) -> torch.Tensor | None:
    """A per-class weight in [0.2, 1.2) for inputs of ``shape`` (None unless ``weighted``)."""
    if not weighted:
        return None
    return torch.rand(_classes(shape), dtype=torch.float64).add(0.2).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("ignore", ["off", "default", "valid"])
@pytest.mark.parametrize(
    ("weighted", "label_smoothing"), [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.3)]
)
def test_cross_entropy_class_targets(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    ignore: str,
    weighted: bool,
    label_smoothing: float,
) -> None:
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype)
    t, ignore_index = _class_target(shape, ignore)
    _check_reductions(
        F.cross_entropy,
        gnf.cross_entropy,
        x,
        t,
        weight=_class_weight(shape, dtype, weighted),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(
    ("weighted", "label_smoothing"), [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.3)]
)
def test_cross_entropy_prob_targets(
    dtype: torch.dtype,
    shape: tuple[int, ...],
    weighted: bool,
    label_smoothing: float,
) -> None:
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype)
    t = _prob_target(shape, dtype)
    _check_reductions(
        F.cross_entropy,
        gnf.cross_entropy,
        x,
        t,
        weight=_class_weight(shape, dtype, weighted),
        label_smoothing=label_smoothing,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("ignore", ["off", "default", "valid"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(dtype: torch.dtype, shape: tuple[int, ...], ignore: str, weighted: bool) -> None:
    cd = 0 if len(shape) == 1 else 1
    x = torch.log_softmax(torch.randn(shape, dtype=torch.float64) * 2, dim=cd).to(dtype)
    t, ignore_index = _class_target(shape, ignore)
    _check_reductions(
        F.nll_loss,
        gnf.nll_loss,
        x,
        t,
        weight=_class_weight(shape, dtype, weighted),
        ignore_index=ignore_index,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_all_targets_ignored(reduction: str, label_smoothing: float) -> None:
    # torch: NaN for 'mean' (0 / 0), zeros otherwise; the gradient is zero everywhere.
    x = torch.randn(4, 5)
    t = torch.full((4,), -100)
    for w in (None, torch.rand(5)):
        _check(
            F.cross_entropy,
            gnf.cross_entropy,
            x,
            t,
            weight=w,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
        _check(F.nll_loss, gnf.nll_loss, x, t, weight=w, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("shape", [(4, 5), (2, 5, 3)], ids=str)
def test_zero_total_target_weight(
    reduction: str, label_smoothing: float, shape: tuple[int, ...]
) -> None:
    # Every target weighted 0 (one row ignored): torch's mean is 0 / 0 = NaN, label smoothing or
    # not (its nll term is NaN), and so is the gradient of every row that is not ignored.
    x = torch.randn(shape)
    t = torch.full((shape[0], *shape[2:]), 3)
    t.view(-1)[0] = -100
    w = torch.tensor([1.0, 2.0, 0.5, 0.0, 1.5])
    _check(
        F.cross_entropy,
        gnf.cross_entropy,
        x,
        t,
        weight=w,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    _check(F.nll_loss, gnf.nll_loss, x, t, weight=w, reduction=reduction)


def test_probability_target_gradient() -> None:
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    t = torch.rand(4, 6, 3, dtype=torch.float64)  # unnormalised, as torch allows
    w = torch.rand(6, dtype=torch.float64)
    for reduction, ls in itertools.product(REDUCTIONS, [0.0, 0.3]):
        grads = []
        for fn in (F.cross_entropy, gnf.cross_entropy):
            xi = x.clone().requires_grad_(True)
            ti = t.clone().requires_grad_(True)
            loss = fn(xi, ti, weight=w, reduction=reduction, label_smoothing=ls)
            torch.manual_seed(1)
            loss.backward(torch.rand(loss.shape, dtype=loss.dtype))
            grads.append((xi.grad, ti.grad))
        tolerances.assert_close(grads[1][0], grads[0][0], tolerances.LOSS[torch.float64], "dx")
        tolerances.assert_close(grads[1][1], grads[0][1], tolerances.LOSS[torch.float64], "dt")


def test_gradcheck() -> None:
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    xk = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, -100])
    yk = torch.tensor([[0, 3, 1], [2, 2, 1]])
    w = torch.rand(5, dtype=torch.float64)
    tp = torch.rand(2, 4, 3, dtype=torch.float64, requires_grad=True)
    for reduction in REDUCTIONS:
        for ls in (0.0, 0.2):
            assert torch.autograd.gradcheck(
                lambda a, r=reduction, e=ls: gnf.cross_entropy(
                    a, y, w, reduction=r, label_smoothing=e
                ),
                (x,),
            )
            assert torch.autograd.gradcheck(
                lambda a, b, r=reduction, e=ls: gnf.cross_entropy(
                    a, b, reduction=r, label_smoothing=e
                ),
                (xk, tp),
            )
        assert torch.autograd.gradcheck(
            lambda a, r=reduction: gnf.cross_entropy(a, yk, reduction=r), (xk,)
        )
        assert torch.autograd.gradcheck(
            lambda a, r=reduction: gnf.nll_loss(a, y, w, reduction=r), (x,)
        )
        assert torch.autograd.gradcheck(
            lambda a, r=reduction: gnf.nll_loss(a, yk, reduction=r), (xk,)
        )


def test_double_backward_is_a_clear_error() -> None:
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2])
    for op in ("cross_entropy", "nll_loss"):
        loss = getattr(gnf, op)(x, t)
        with pytest.raises(RuntimeError, match="double backward"):
            torch.autograd.grad(loss, x, create_graph=True)


def test_retain_graph_backward_twice() -> None:
    x = torch.randn(6, 9, requires_grad=True)
    t = torch.randint(0, 9, (6,))
    loss = gnf.cross_entropy(x, t, label_smoothing=0.1)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward(torch.tensor(2.0))
    tolerances.assert_close(x.grad, 3 * first, tolerances.LOSS[torch.float32], "twice")


def test_confident_bfloat16_keeps_its_gradient() -> None:
    # p_y in {0.9, 0.99, 0.999}: the target-class gradient p_y - 1 comes from float, not from a
    # rounded bfloat16 value, so its relative error is bfloat16 rounding only.
    c = 1000
    for p in (0.9, 0.99, 0.999):
        x = torch.zeros(1, c, dtype=torch.float64)
        x[0, 3] = torch.log(torch.tensor(p * (c - 1) / (1 - p), dtype=torch.float64))
        x = (x + torch.randn(1, c, dtype=torch.float64) * 1e-3).bfloat16()
        t = torch.tensor([3])
        xg = x.clone().requires_grad_(True)
        gnf.cross_entropy(xg, t).backward()
        xr = x.double().requires_grad_(True)
        F.cross_entropy(xr, t).backward()
        rel = ((xg.grad[0, 3].double() - xr.grad[0, 3]) / xr.grad[0, 3]).abs().item()
        assert rel <= 2.0**-8, f"p={p}: relative error {rel}"


def test_no_grad_input_and_eval() -> None:
    x = torch.randn(4, 7)
    t = torch.randint(0, 7, (4,))
    with torch.no_grad():
        loss = gnf.cross_entropy(x.requires_grad_(True), t)
    assert loss.grad_fn is None
    tolerances.assert_close(loss, F.cross_entropy(x, t), tolerances.LOSS[torch.float32], "eval")
    x = x.detach()
    for ours, theirs in [
        (gnf.cross_entropy(x, t, label_smoothing=0.1), F.cross_entropy(x, t, label_smoothing=0.1)),
        (gnf.nll_loss(x, t, reduction="none"), F.nll_loss(x, t, reduction="none")),
    ]:
        assert ours.grad_fn is None
        tolerances.assert_close(ours, theirs, tolerances.LOSS[torch.float32], "no grad")
    np_t = t.numpy().astype("uint8")
    loss_np, _ = gradfuse.functional.cross_entropy_with_grad(x.numpy(), np_t, compute_grad=False)
    tolerances.assert_close(
        torch.from_numpy(loss_np), F.cross_entropy(x, t), tolerances.LOSS[torch.float32], "uint8"
    )


def test_input_is_not_modified() -> None:
    x = torch.randn(5, 11, requires_grad=True)
    before = x.detach().clone()
    gnf.cross_entropy(x, torch.randint(0, 11, (5,))).backward()
    assert torch.equal(x.detach(), before)


@pytest.mark.parametrize(
    ("shape", "target"),
    [
        ((4, 5), torch.tensor([0, 1, 2])),
        ((4, 5), torch.tensor([0.0, 1, 2, 3])),
        ((4, 5), torch.randint(0, 5, (4,)).int()),
        ((4, 5), torch.rand(4, 5).long()),
        ((4, 5), torch.rand(4, 6)),
        ((5,), torch.tensor([1, 2])),
        ((2, 5, 3), torch.randint(0, 5, (2, 4))),
        ((2, 5, 3), torch.randint(0, 5, (2,))),
        ((2, 5, 3, 2), torch.randint(0, 5, (2, 3, 3))),
        ((2, 5, 3, 2), torch.randint(0, 5, (2, 6))),
        ((4, 5), torch.tensor([0, 1, 2, 7])),
        ((4, 5), torch.tensor([0, 1, -3, 2])),
        ((2, 5, 3), torch.tensor([[0, 1, 2], [3, 9, 0]])),
    ],
)
@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_errors_match_torch(shape: tuple[int, ...], target: torch.Tensor, op: str) -> None:
    x = torch.randn(shape)
    with pytest.raises(Exception) as theirs:  # noqa: PT011 - whatever torch raises
        getattr(F, op)(x, target)
    with pytest.raises(type(theirs.value)) as ours:
        getattr(gnf, op)(x, target)
    assert str(ours.value) == str(theirs.value)


def test_option_errors_match_torch() -> None:
    x = torch.randn(4, 5)
    t = torch.randint(0, 5, (4,))
    cases: list[tuple[str, dict[str, Any]]] = [
        ("cross_entropy", {"weight": torch.rand(4)}),
        ("cross_entropy", {"weight": torch.rand(5).double()}),
        ("cross_entropy", {"label_smoothing": 1.5}),
        ("cross_entropy", {"reduction": "foo"}),
        ("nll_loss", {"weight": torch.rand(4)}),
        ("nll_loss", {"reduction": "bar"}),
    ]
    for op, kw in cases:
        with pytest.raises(Exception) as theirs:  # noqa: PT011
            getattr(F, op)(x, t, **kw)
        with pytest.raises(type(theirs.value)) as ours:
            getattr(gnf, op)(x, t, **kw)
        assert str(ours.value) == str(theirs.value), (op, kw)
    with pytest.raises(RuntimeError) as theirs:
        F.cross_entropy(x, torch.rand(4, 5), ignore_index=1)
    with pytest.raises(RuntimeError, match=str(theirs.value)):
        gnf.cross_entropy(x, torch.rand(4, 5), ignore_index=1)


def test_out_of_range_target_writes_nothing() -> None:
    x = torch.randn(4, 5, requires_grad=True)
    with pytest.raises(IndexError, match=r"Target 5 is out of bounds\."):
        gnf.cross_entropy(x, torch.tensor([0, 5, 1, 1]))
    assert x.grad is None


def test_legacy_reduction_arguments() -> None:
    x = torch.randn(4, 5)
    t = torch.randint(0, 5, (4,))
    for size_average, reduce in [(False, None), (None, False), (True, True)]:
        with pytest.warns(UserWarning, match="size_average and reduce"):
            theirs = F.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning, match="size_average and reduce"):
            ours = gnf.cross_entropy(x, t, size_average=size_average, reduce=reduce)
        tolerances.assert_close(ours, theirs, tolerances.LOSS[torch.float32], "legacy")
        with pytest.warns(UserWarning, match="size_average and reduce"):
            ours = gnf.nll_loss(x, t, size_average=size_average, reduce=reduce)
        with pytest.warns(UserWarning, match="size_average and reduce"):
            theirs = F.nll_loss(x, t, size_average=size_average, reduce=reduce)
        tolerances.assert_close(ours, theirs, tolerances.LOSS[torch.float32], "legacy nll")


def test_modules_are_drop_ins() -> None:
    w = torch.rand(7, dtype=torch.float64)
    ours = gradfuse.nn.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(weight=w, ignore_index=2, label_smoothing=0.1)
    assert isinstance(ours, torch.nn.CrossEntropyLoss)
    assert repr(ours) == repr(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    x = torch.randn(6, 7, 2, dtype=torch.float64)
    t = torch.randint(0, 7, (6, 2))
    _check(theirs, ours, x, t)
    nll_ours = gradfuse.nn.NLLLoss(weight=w, reduction="sum")
    nll_theirs = torch.nn.NLLLoss(weight=w, reduction="sum")
    assert isinstance(nll_ours, torch.nn.NLLLoss)
    _check(nll_theirs, nll_ours, x, t)


def test_training_step_matches_torch() -> None:
    # A linear classifier: parameter gradients through the fused loss equal torch's.
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 7)
    clone = torch.nn.Linear(10, 7)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(32, 10)
    y = torch.randint(0, 7, (32,))
    gradfuse.nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), y).backward()
    torch.nn.CrossEntropyLoss(label_smoothing=0.1)(clone(x), y).backward()
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        tolerances.assert_close(p.grad, q.grad, tolerances.LOSS[torch.float32], "param grad")
