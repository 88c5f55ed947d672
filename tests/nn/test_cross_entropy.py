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
# C10x130: rows shorter than 16 classes go 64 at a time through a tiled path; 130 ends in a
# partial tile.
SHAPES = [(5, 1), (6, 7), (130, 10), (3, 4097), (7,), (2, 7, 3, 5), (3, 4, 1, 2, 3), (0, 7)]
SHAPE_IDS = ["C1", "C7", "C10x130", "C4097", "unbatched", "kdim2", "kdim3", "empty"]
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
        _check_ce_and_nll(x, t, w, reduction, label_smoothing)


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
    _check_ce_and_nll(x, t, w, reduction, label_smoothing)


def _check_ce_and_nll(
    x: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None, reduction: str, smoothing: float
) -> None:
    """:func:`_check` of cross_entropy (with ``smoothing``) and nll_loss on the same inputs."""
    _check(
        F.cross_entropy,
        gnf.cross_entropy,
        x,
        t,
        weight=w,
        reduction=reduction,
        label_smoothing=smoothing,
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


# ---------------------------------------------------------------------------------------------
# torch.autocast, mixed dtypes, option and argument edge cases.


def _outcome(fn: Any, x: torch.Tensor, t: torch.Tensor, go: torch.Tensor | None, **kw: Any) -> Any:
    """(loss, input grad, target grad) of one call, or the exception it raised."""
    xi = x.detach().clone().requires_grad_(True)
    ti = t.detach().clone().requires_grad_(t.is_floating_point())
    try:
        loss = fn(xi, ti, **kw)
    except Exception as e:  # noqa: BLE001 - compared with torch's
        return e
    loss.backward(torch.ones_like(loss) if go is None else go.to(loss))
    return loss.detach(), xi.grad, ti.grad


def _same_error(ours: Any, theirs: Any, what: str) -> bool:
    """True when torch raised (and gradfuse raised the same); False when both computed."""
    if isinstance(theirs, Exception) or isinstance(ours, Exception):
        assert type(ours) is type(theirs), f"{what}: {ours!r} vs torch's {theirs!r}"
        assert str(ours) == str(theirs), what
        return True
    return False


def _compare_mixed(ours: torch.Tensor, theirs: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Operands of different dtypes: torch rounds through each operand's dtype on the way (the
    smoothed target in the target's, the product with a 16-bit target...), gradfuse once, from
    the promoted dtype. Either as close to torch as a result of that dtype must be, or at most
    twice as far from the float64 run as torch (the low-precision rule)."""
    try:
        tolerances.assert_close(ours, theirs, tolerances.LOSS[ours.dtype], what)
    except AssertionError:
        tolerances.assert_low_precision(ours, theirs, ref, what)


AUTOCAST_CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("cross_entropy", "class", {}),
    ("cross_entropy", "class", {"label_smoothing": 0.1, "weight": True}),
    ("cross_entropy", "class", {"ignore_index": 2}),
    ("cross_entropy", "prob", {}),
    ("cross_entropy", "prob", {"label_smoothing": 0.2, "weight": True}),
    ("nll_loss", "class", {}),
    ("nll_loss", "class", {"weight": True}),
]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(("op", "target", "kw"), AUTOCAST_CONFIGS, ids=str)
def test_autocast_like_torch(
    op: str, target: str, kw: dict[str, Any], amp_dtype: torch.dtype, device: str
) -> None:
    """cross_entropy and nll_loss are on torch.autocast's float32 list (CUDA: cross_entropy's
    log_softmax keeps the input's dtype, its nll_loss is float32): a 16-bit input, target or
    weight gives a float32 loss, and the input's gradient comes back in its own dtype. gradfuse
    returned a 16-bit loss. float64 inputs stay float64 (a 16-bit weight then fails in both)."""
    shape = (6, 11, 3)
    for in_dtype in (amp_dtype, torch.float32, torch.float64):
        x = torch.randn(shape, dtype=torch.float64) * 3
        if op == "nll_loss":
            x = torch.log_softmax(x, dim=1)
        t = _prob_target(shape, amp_dtype) if target == "prob" else _class_target(shape, "off")[0]
        call_kw = dict(kw)
        if kw.get("weight"):
            call_kw["weight"] = _class_weight(shape, amp_dtype, True)
        x, t = x.to(device, in_dtype), t.to(device)
        for reduction in REDUCTIONS:
            call_kw["reduction"] = reduction
            runs = []
            for fn in (getattr(gnf, op), getattr(F, op)):
                w = call_kw.get("weight")
                call_kw["weight"] = None if w is None else w.to(device)
                with torch.autocast(device, dtype=amp_dtype):
                    runs.append(_outcome(fn, x, t, None, **call_kw))
            what = f"{op} {target} {kw} {reduction} input {in_dtype} under {amp_dtype}"
            if _same_error(runs[0], runs[1], what):
                continue
            ref_kw = dict(call_kw)
            if ref_kw.get("weight") is not None:
                ref_kw["weight"] = ref_kw["weight"].double()
            t64 = t.double() if t.is_floating_point() else t
            ref = _outcome(getattr(F, op), x.double(), t64, None, **ref_kw)
            # The operands' dtypes as autocast hands them over (16-bit ones cast to float32).
            involved = {torch.float64 if in_dtype == torch.float64 else torch.float32}
            if target == "prob" or kw.get("weight"):
                involved.add(torch.float32)
            for k, (ours, theirs, r) in enumerate(zip(runs[0], runs[1], ref, strict=True)):
                if theirs is None:
                    assert ours is None, what
                    continue
                assert ours.dtype == theirs.dtype, f"{what} output {k}"
                if len(involved) > 1:
                    _compare_mixed(ours, theirs, r, f"{what} output {k}")
                else:
                    _compare(ours, theirs, r, ours.dtype, f"{what} output {k}")


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
def test_float16_autocast_grad_scaler_step_is_taken(op: str) -> None:
    """float16 autocast + GradScaler (init_scale 65536): torch's loss is float32, so the scaled
    upstream gradient stays finite and the step is taken. A float16 loss rounds it to inf:
    every step was skipped (the scale halved, the weights stayed)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 10)
    x = torch.randn(16, 8)
    t = torch.randint(0, 10, (16,))
    runs = []
    for fn in (getattr(gnf, op), getattr(F, op)):
        m = torch.nn.Linear(8, 10)
        m.load_state_dict(model.state_dict())
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu")
        with torch.autocast("cpu", dtype=torch.float16):
            out = m(x)
            if op == "nll_loss":
                out = torch.log_softmax(out.float(), dim=1).half()
            loss = fn(out, t)
        assert loss.dtype == torch.float32
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        assert scaler.get_scale() == 65536.0, f"{op}: the step was skipped"
        assert not torch.equal(m.weight, model.weight)
        runs.append([p.grad for p in m.parameters()])
    for ours, theirs in zip(*runs, strict=True):
        # float16 matmuls of the same float16 logit gradients (each a unit of float16 at most
        # apart), accumulated in float32.
        tolerances.assert_close(ours, theirs, tolerances.LOSS[torch.float16], f"{op} grad")


@pytest.mark.parametrize("weight_dtype", [None, *DTYPES, torch.int64], ids=str)
def test_probability_targets_of_mixed_dtypes(weight_dtype: torch.dtype | None) -> None:
    """Probability targets: torch computes -(log_softmax(input) * target * weight), promoting
    all three, a float64 or integer weight included (gradfuse refused a weight of another
    dtype); the gradients come back in the input's and the target's dtypes."""
    shape = (5, 7, 2)
    for xd, td in itertools.product(DTYPES, DTYPES):
        x = (torch.randn(shape, dtype=torch.float64) * 3).to(xd)
        t = _prob_target(shape, td)
        w = None
        if weight_dtype is not None:
            w = (torch.rand(7, dtype=torch.float64) * 3 + 0.5).to(weight_dtype)
        involved = {xd, td} | ({weight_dtype} if weight_dtype is not None else set())
        for reduction in REDUCTIONS:
            go = torch.rand(shape[0], shape[2], dtype=torch.float64) + 0.5
            go = go if reduction == "none" else go[0, 0]
            ours = _outcome(gnf.cross_entropy, x, t, go, weight=w, reduction=reduction)
            theirs = _outcome(F.cross_entropy, x, t, go, weight=w, reduction=reduction)
            w64 = None if w is None else w.double()
            ref = _outcome(
                F.cross_entropy, x.double(), t.double(), go, weight=w64, reduction=reduction
            )
            what = f"input {xd} target {td} weight {weight_dtype} {reduction}"
            assert not isinstance(ours, Exception), f"{what}: {ours!r}"
            assert ours[1].dtype == xd, what
            assert ours[2].dtype == td, what
            for k, (a, b, r) in enumerate(zip(ours, theirs, ref, strict=True)):
                assert a.dtype == b.dtype, f"{what} output {k}: {a.dtype} vs {b.dtype}"
                if involved - {torch.int64} == {a.dtype}:
                    _compare(a, b, r, a.dtype, f"{what} output {k}")
                else:
                    _compare_mixed(a, b, r, f"{what} output {k}")


@pytest.mark.parametrize("label_smoothing", [-0.1, -5.0, float("nan"), 1.5, float("inf")])
def test_label_smoothing_out_of_range_like_torch(label_smoothing: float) -> None:
    """torch smooths only where label_smoothing > 0 and checks <= 1 only there: a negative
    value or NaN is no smoothing (gradfuse raised), above 1 is torch's error."""
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    cases = [torch.randint(0, 6, (4, 3)), torch.rand(4, 6, 3, dtype=torch.float64)]
    cases[0][0, 0] = -100
    for t in cases:
        for reduction in REDUCTIONS:
            kw = {"label_smoothing": label_smoothing, "reduction": reduction}
            go = None if reduction != "none" else torch.rand(4, 3, dtype=torch.float64)
            ours = _outcome(gnf.cross_entropy, x, t, go, **kw)
            theirs = _outcome(F.cross_entropy, x, t, go, **kw)
            what = f"label_smoothing={label_smoothing} {reduction} {t.dtype}"
            if _same_error(ours, theirs, what):
                assert label_smoothing > 1
                continue
            for a, b in zip(ours, theirs, strict=True):
                if b is None:
                    assert a is None
                    continue
                tolerances.assert_close(a, b, tolerances.LOSS[torch.float64], what)
    with pytest.raises(RuntimeError, match="label_smoothing must be between"):
        gradfuse.functional.cross_entropy_with_grad(x, cases[0], label_smoothing=1.5)
    if not label_smoothing > 0:
        ours_wg = gradfuse.functional.cross_entropy_with_grad(x, cases[0], label_smoothing=-1.0)
        plain = gradfuse.functional.cross_entropy_with_grad(x, cases[0])
        assert torch.equal(ours_wg[0], plain[0])
        assert torch.equal(ours_wg[1], plain[1])


UINT8_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("cross_entropy", {}),
    ("cross_entropy", {"reduction": "none"}),
    ("cross_entropy", {"label_smoothing": 0.1}),
    ("cross_entropy", {"label_smoothing": 0.1, "weight": True}),
    ("cross_entropy", {"label_smoothing": 0.1, "weight": True, "reduction": "sum"}),
    ("nll_loss", {}),
    ("nll_loss", {"weight": True, "reduction": "none"}),
]


@pytest.mark.parametrize("shape", [(7,), (4, 7), (4, 7, 3), (2, 7, 3, 2), (2, 7, 2, 2, 2)], ids=str)
@pytest.mark.parametrize(("op", "kw"), UINT8_CONFIGS, ids=str)
def test_uint8_targets_like_torch(op: str, kw: dict[str, Any], shape: tuple[int, ...]) -> None:
    """torch takes uint8 class targets only in nll_loss's 1-D / 2-D kernel: an input of 3 or
    more dims asks for Long, and the label-smoothed weighted 'mean' gathers weights with the
    targets as an index (int32/int64 only). gradfuse took uint8 everywhere."""
    x = torch.randn(shape)
    t = _class_target(shape, "off")[0].to(torch.uint8)
    call_kw = dict(kw)
    if kw.get("weight"):
        call_kw["weight"] = torch.rand(7) + 0.5
    ours = _outcome(getattr(gnf, op), x, t, None, **call_kw)
    theirs = _outcome(getattr(F, op), x, t, None, **call_kw)
    if _same_error(ours, theirs, f"{op} {kw} {shape}"):
        return
    for a, b in zip(ours[:2], theirs[:2], strict=True):
        tolerances.assert_close(a, b, tolerances.LOSS[torch.float32], f"{op} {kw} {shape}")


def test_non_tensor_arguments_like_torch() -> None:
    """A list where torch wants a tensor: torch's TypeError naming the argument (gradfuse raised
    AttributeError)."""
    x = torch.randn(4, 4)
    t = torch.tensor([0, 1, 2, 3])
    for op in ("cross_entropy", "nll_loss"):
        for args, kw in (
            ((x, [0, 1, 2, 3]), {}),
            (([[0.0] * 4] * 4, t), {}),
            ((x, t), {"weight": [1.0] * 4}),
        ):
            with pytest.raises(TypeError) as theirs:
                getattr(F, op)(*args, **kw)
            with pytest.raises(TypeError) as ours:
                getattr(gnf, op)(*args, **kw)
            assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("op", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_ignored_rows_have_no_gradient_under_non_finite_grad_output(
    op: str, label_smoothing: float
) -> None:
    """torch's gradient of a row whose target is ignore_index is 0 whatever grad_output is:
    nll_loss's backward writes nothing there. An all-ignored batch whose summed loss is divided
    by 0 items (transformers' ForCausalLMLoss, num_items_in_batch=0) has grad_output inf: the
    saved zeros times inf gave NaN."""
    kw: dict[str, Any] = {} if op == "nll_loss" else {"label_smoothing": label_smoothing}
    x = torch.randn(5, 7)
    all_ignored = torch.full((5,), -100)
    for reduction, go in (
        ("sum", torch.tensor(float("inf"))),
        ("mean", torch.tensor(float("nan"))),
    ):
        ours = _outcome(getattr(gnf, op), x, all_ignored, go, reduction=reduction, **kw)
        theirs = _outcome(getattr(F, op), x, all_ignored, go, reduction=reduction, **kw)
        assert torch.equal(ours[1], theirs[1]), (reduction, ours[1])
        assert torch.equal(ours[1], torch.zeros_like(x))
    # reduction='none': the ignored rows' grad_output may be anything.
    t = torch.tensor([0, -100, 3, -100, 6])
    go = torch.tensor([0.5, float("inf"), 2.0, float("nan"), 1.0])
    ours = _outcome(getattr(gnf, op), x, t, go, reduction="none", **kw)
    theirs = _outcome(getattr(F, op), x, t, go, reduction="none", **kw)
    tolerances.assert_close(ours[1], theirs[1], tolerances.LOSS[torch.float32], "none")
    assert torch.equal(ours[1][[1, 3]], torch.zeros(2, 7))


def test_causal_lm_loss_with_no_items_like_transformers() -> None:
    """transformers' ForCausalLMLoss on a batch whose labels are all -100, with
    num_items_in_batch=0 (a gradient-accumulation step with nothing to predict): loss NaN, the
    logits' gradient 0. causal_lm_loss gave a NaN gradient."""
    loss_utils = pytest.importorskip("transformers.loss.loss_utils")
    from gradfuse.integrations.transformers import causal_lm_loss

    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), -100)
    grads = []
    for fn in (causal_lm_loss, loss_utils.ForCausalLMLoss):
        x = logits.clone().requires_grad_(True)
        loss = fn(x, labels, 11, num_items_in_batch=torch.tensor(0))
        assert torch.isnan(loss)
        loss.backward()
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(grads[0], torch.zeros_like(logits))
