"""gradfuse.optim.Adafactor and functional.adafactor_ against torch.optim.Adafactor (its
for-loop path, the default): trajectories for every option and dtype, factored (rank >= 2) and
unfactored (rank < 2) params, state names and checkpoints both ways, AMP, errors."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _more_helpers import (
    assert_same_errors,
    check_amp_skip_then_scaled_step,
    compare_trajectory,
    leaves,
    one_torch_thread,
    random_problem,
    run_steps,
)

import gradfuse
from conftest import DTYPES
from gradfuse.optim import Adafactor
from tolerances import (
    CLIPPED_FLOAT64,
    CPU_VS_CUDA,
    STEP,
    TRAJECTORY,
    assert_close,
    assert_low_precision,
)

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)

# Odd sizes (1, 7, 4097) as vectors and as factored matrices and batches of matrices, a 0-dim
# param, rows or columns of one. torch divides by the size of an empty param (tested apart).
SHAPES: list[Any] = [
    (1,),
    (7,),
    (4097,),
    (),
    (7, 13),
    (1, 7),
    (7, 1),
    (3, 5, 9),
    (4097, 3),
    (2, 1, 3, 4),
]


def reference(ps: list[torch.Tensor], **kw: Any) -> torch.optim.Adafactor:
    kw.pop("max_grad_norm", None)
    return torch.optim.Adafactor(ps, foreach=False, **kw)


OPTIONS = list(
    itertools.product(
        [1e-2, 0.3],  # lr (0.3: rho = 1 / sqrt(t) from step 12 on)
        [-0.8, -0.5],  # beta2_decay
        [(None, 1e-3), (1e-3, 1e-2)],  # eps
        [1.0, 3.0],  # d
        [0.0, 0.1],  # weight_decay
    )
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("lr", "beta2_decay", "eps", "d", "wd"), OPTIONS)
def test_every_option(
    dtype: torch.dtype, lr: float, beta2_decay: float, eps: Any, d: float, wd: float
) -> None:
    kw: dict[str, Any] = {
        "lr": lr,
        "beta2_decay": beta2_decay,
        "eps": eps,
        "d": d,
        "weight_decay": wd,
    }
    if dtype == torch.float32 and lr > 0.1:
        # Steps of up to 30% of RMS(p) (rho = min(lr, 1/sqrt(t))) carry the float32 rounding of
        # three reductions and of u (torch's order of operations differs from the kernel's) into
        # the params at that scale: judged as the 16-bit dtypes are, against float64, by torch's
        # own float32 error (tolerances.assert_low_precision).
        start, grads = random_problem(20, SHAPES)
        runs = []
        for make, dt in ((Adafactor, dtype), (reference, dtype), (reference, torch.float64)):
            ps = leaves(start, dt)
            run_steps(make(ps, **kw), ps, grads)
            runs.append(torch.cat([p.detach().reshape(-1) for p in ps]))
        assert_low_precision(runs[0], runs[1], runs[2], str(kw))
        return
    compare_trajectory(
        lambda ps: Adafactor(ps, **kw),
        lambda ps: reference(ps, **kw),
        dtype,
        steps=20,
        sizes=SHAPES,
        msg=str(kw),
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("maximize", [False, True])
def test_trajectory(dtype: torch.dtype, maximize: bool) -> None:
    kw: dict[str, Any] = {"maximize": maximize, "weight_decay": 0.01}
    compare_trajectory(
        lambda ps: Adafactor(ps, **kw),
        lambda ps: reference(ps, **kw),
        dtype,
        sizes=SHAPES,
        msg=str(kw),
    )


def test_tensor_lr_param_groups_and_foreach_reference() -> None:
    def make(cls: Any, ps: list[torch.Tensor], **extra: Any) -> Any:
        return cls(
            [{"params": ps[:4]}, {"params": ps[4:], "lr": 0.05, "d": 2.0}],
            lr=torch.tensor(0.02, dtype=torch.float64),
            **extra,
        )

    compare_trajectory(
        lambda ps: make(Adafactor, ps),
        lambda ps: make(torch.optim.Adafactor, ps, foreach=True),
        torch.float64,
        steps=30,
        sizes=SHAPES,
    )


def test_state_names_and_round_trip_both_ways() -> None:
    p = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True)]
    for x in p:
        x.grad = torch.ones_like(x)
    opt = Adafactor(p)
    opt.step()
    assert sorted(opt.state[p[0]]) == ["col_var", "row_var", "step"]
    assert sorted(opt.state[p[1]]) == ["step", "variance"]
    assert opt.state[p[0]]["row_var"].shape == (3, 1)
    assert opt.state[p[0]]["col_var"].shape == (1, 4)
    assert opt.state[p[0]]["step"].dtype == torch.float32


def test_checkpoint_with_matrices_both_ways() -> None:
    start, grads = random_problem(12, SHAPES)
    for make_a, make_b in ((Adafactor, torch.optim.Adafactor), (torch.optim.Adafactor, Adafactor)):
        a = leaves(start, torch.float64)
        opt_a = make_a(a, weight_decay=0.1)
        run_steps(opt_a, a, grads[:6])
        b = [x.detach().clone().requires_grad_() for x in a]
        opt_b = make_b(b, weight_decay=0.1)
        opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
        run_steps(opt_a, a, grads[6:])
        run_steps(opt_b, b, grads[6:])
        for x, y in zip(a, b, strict=True):
            assert_close(x.detach(), y.detach(), TRAJECTORY[torch.float64], "round trip")


def test_max_grad_norm_is_clipping_then_step() -> None:
    start, grads = random_problem(10, SHAPES)
    a, b = leaves(start, torch.float64), leaves(start, torch.float64)
    run_steps(Adafactor(a, max_grad_norm=0.5), a, grads)
    run_steps(
        torch.optim.Adafactor(b),
        b,
        grads,
        before_step=lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.5),
    )
    for x, y in zip(a, b, strict=True):
        # The clipping factor is a float32 scalar (GradScaling), torch's a float64 one.
        assert_close(x.detach(), y.detach(), CLIPPED_FLOAT64, "max_grad_norm")


def test_empty_params_only_count_steps() -> None:
    ps = [
        torch.zeros(0, requires_grad=True),
        torch.zeros(0, 5, requires_grad=True),
        torch.randn(3, 4, requires_grad=True),
    ]
    for x in ps:
        x.grad = torch.randn_like(x)
    opt = Adafactor(ps)
    opt.step()
    assert [float(opt.state[x]["step"]) for x in ps] == [1.0, 1.0, 1.0]
    assert torch.equal(opt.state[ps[1]]["col_var"], torch.zeros(1, 5))


def test_grad_scaler_inf_changes_nothing() -> None:
    start, grads = random_problem(3, SHAPES)
    check_amp_skip_then_scaled_step(
        lambda ps: Adafactor(ps, weight_decay=0.1),
        lambda ps: torch.optim.Adafactor(ps, weight_decay=0.1),
        start,
        grads,
        scale=256.0,
        bad=float("nan"),
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"lr": -1.0},
        {"lr": torch.tensor([0.1, 0.2])},
        {"beta2_decay": 0.5},
        {"eps": (-1.0, 1e-3)},
        {"eps": (None, -1.0)},
        {"d": 0.5},
        {"weight_decay": -0.1},
    ],
    ids=str,
)
def test_constructor_errors_match_torch(kw: dict[str, Any]) -> None:
    p = [torch.zeros(2, requires_grad=True)]
    assert_same_errors(lambda: Adafactor(p, **kw), lambda: torch.optim.Adafactor(p, **kw))


def test_step_errors_match_torch() -> None:
    for make in (Adafactor, torch.optim.Adafactor):
        c = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
        c.grad = torch.zeros_like(c)
        with pytest.raises(RuntimeError, match="Adafactor does not support complex parameters"):
            make([c]).step()
        s = torch.zeros(3, requires_grad=True)
        s.grad = torch.zeros(3).to_sparse()
        with pytest.raises(RuntimeError, match="Adafactor does not support sparse gradients"):
            make([s]).step()


def test_bad_arguments_write_nothing() -> None:
    p = [torch.randn(4, 6), torch.randn(5)]
    g = [torch.randn(4, 6), torch.randn(5)]
    row, col, var = torch.zeros(4, 1), torch.zeros(1, 6), torch.zeros(5)
    steps = [torch.tensor(0.0), torch.tensor(0.0)]
    keep = [x.clone() for x in (*p, row, col, var, *steps)]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"row_vars": [torch.zeros(4), None]}, r"row_vars\[0\] has shape \(4,\)"),
        ({"col_vars": [torch.zeros(1, 6, dtype=torch.float64), None]}, r"col_vars\[0\]"),
        ({"variances": [None, None]}, r"variances\[1\] is None"),
        ({"grads": [torch.randn(6, 4), g[1]]}, r"grads\[0\]"),
        ({"variances": [None, p[1]]}, "share|overlap"),
        # across the factored and the flat params' lists: named only when it is found
        (
            {"row_vars": [p[1][:4].view(4, 1), None]},
            r"adafactor_: params\[1\] and adafactor_: row_vars\[0\] share memory",
        ),
        ({"state_steps": [steps[0]]}, "state_steps"),
        (
            {
                "params": [p[0].t(), p[1]],
                "grads": [g[0].t(), g[1]],
                "row_vars": [torch.zeros(6, 1), None],
                "col_vars": [torch.zeros(1, 4), None],
            },
            "must be contiguous",
        ),
    ]
    for override, match in cases:
        args: dict[str, Any] = {
            "params": p,
            "grads": g,
            "row_vars": [row, None],
            "col_vars": [col, None],
            "variances": [None, var],
            "state_steps": steps,
        }
        args.update(override)
        with pytest.raises((ValueError, TypeError), match=match):
            gradfuse.functional.adafactor_(
                args["params"],
                args["grads"],
                args["row_vars"],
                args["col_vars"],
                args["variances"],
                args["state_steps"],
            )
        for x, y in zip((*p, row, col, var, *steps), keep, strict=True):
            assert torch.equal(x, y)


def test_functional_numpy() -> None:
    rng = np.random.default_rng(5)
    p, g = rng.standard_normal((7, 9)), rng.standard_normal((7, 9))
    row, col = np.zeros((7, 1)), np.zeros((1, 9))
    steps = [np.zeros(())]
    tp = torch.from_numpy(p.copy()).requires_grad_()
    tp.grad = torch.from_numpy(g.copy())
    ref = torch.optim.Adafactor([tp], lr=0.05)
    for _ in range(3):
        gradfuse.functional.adafactor_([p], [g], [row], [col], [None], steps, lr=0.05)
        ref.step()
    assert_close(torch.from_numpy(p), tp.detach(), STEP[torch.float64], "numpy")
    assert_close(torch.from_numpy(row), ref.state[tp]["row_var"], STEP[torch.float64], "row")
    assert float(steps[0]) == 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("eps1", [1e-3, None])
def test_clamped_zero_and_tiny_rows_match_torch(dtype: torch.dtype, eps1: float | None) -> None:
    # The kernel sums u^2 of a factored param from its row and column weights unless the eps1
    # clamp may be active for some nonzero gradient (then it reads g once more): rows and
    # columns of zeros (their factors are infinite), rows of tiny gradients (clamped with
    # eps1=1e-3: sqrt(v) < eps1), a 1e-30 column, against torch in both cases.
    shapes = [(40, 24), (3, 17, 33), (300, 5)]
    gen = torch.Generator().manual_seed(11)
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = []
    for t in range(12):
        gs = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
        gs[0][3] = 0.0  # a zero row in every step
        gs[0][:, 5] = 0.0  # a zero column
        gs[1][..., 7, :] *= 1e-6  # tiny rows: clamped under eps1=1e-3
        gs[2][:, 1] = 1e-30 if t % 2 else 0.0
        if t == 4:
            gs[2].zero_()  # a step without any gradient
        grads.append(gs)
    kw: dict[str, Any] = {"lr": 0.05, "eps": (eps1, 1e-3), "weight_decay": 0.01}
    ours, theirs = leaves(start, dtype), leaves(start, dtype)
    run_steps(Adafactor(ours, **kw), ours, grads)
    run_steps(reference(theirs, **kw), theirs, grads)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.isfinite(a).all()
        assert_close(a.detach(), b.detach(), TRAJECTORY[dtype], str(kw))


def test_errors_name_the_callers_index() -> None:
    # adafactor_ checks its factored and its flat params apart: the messages still name the
    # caller's index (params[1] is the first flat param, params[2] the second factored one).
    p = [torch.randn(4, 6), torch.randn(5)]
    g = [torch.randn(4, 6), torch.randn(5, dtype=torch.float64)]
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype float64 but params\[1\]"):
        gradfuse.functional.adafactor_(
            p, g, [torch.zeros(4, 1), None], [torch.zeros(1, 6), None], [None, torch.zeros(5)],
            [torch.tensor(0.0), torch.tensor(0.0)],
        )  # fmt: skip
    p = [torch.randn(5), torch.randn(4, 6).bfloat16(), torch.randn(3, 6).bfloat16()]
    g = [torch.randn(5), torch.randn(4, 6).bfloat16(), torch.randn(3, 6).bfloat16()]
    rows, cols = [None, torch.zeros(4, 1), torch.zeros(3, 1)], [None, *[torch.zeros(1, 6)] * 2]
    variances, steps = [torch.zeros(5), None, None], [torch.tensor(0.0) for _ in range(3)]
    masters = [None, p[1].float(), p[2].float()[:2]]
    with pytest.raises(ValueError, match=r"master_params\[2\] has shape \(2, 6\) but params\[2\]"):
        gradfuse.functional.adafactor_(p, g, rows, cols, variances, steps, master_params=masters)
    masters = [None, p[1].float(), p[2].double()]
    with pytest.raises(TypeError, match=r"master_params\[2\] must be a float32 tensor"):
        gradfuse.functional.adafactor_(p, g, rows, cols, variances, steps, master_params=masters)
    p[0], g[0] = p[0].bfloat16(), g[0].bfloat16()
    variances[0] = torch.zeros(5, dtype=torch.bfloat16)
    comps = [torch.zeros_like(p[0]), torch.zeros_like(p[1]), None]
    with pytest.raises(TypeError, match=r"kahan_comps\[2\] is None"):
        gradfuse.functional.adafactor_(p, g, rows, cols, variances, steps, kahan_comps=comps)


# The native binding, called directly (as functional.adafactor_ does): rows/cols are checked
# before anything is written.
_MODES = {
    "adafactor": ["maximize"],
    "lion": ["maximize"],
    "lamb": ["decoupled", "trust", "maximize"],
}


def _binding_call(kernel: str, ts: list[torch.Tensor], **shapes: Any) -> None:
    """One optimizer_step of ``kernel`` over float32 tensors ``ts`` (one per slot), every
    hyperparameter 1."""
    core = gradfuse._native.core()
    fields = core.CODES["hyper_fields"][kernel]
    core.optimizer_step(
        kernel, [[t.data_ptr()] for t in ts], [ts[0].numel()], core.CODES["dtype"]["float32"],
        -1, 0, [1.0] * len(fields), dict.fromkeys(_MODES[kernel], 0), **shapes,
    )  # fmt: skip


def _refused(kernel: str, error: type[Exception], match: str, **shapes: Any) -> None:
    ts = [torch.full((12,), 0.5) for _ in range(3 if kernel == "lion" else 4)]
    with pytest.raises(error, match=match):
        _binding_call(kernel, ts, **shapes)
    for t in ts:
        assert torch.equal(t, torch.full((12,), 0.5))


def test_binding_refuses_rows_cols_that_do_not_fit() -> None:
    # rows * cols overflowed int64 in the check: 2**32 x 2**32 and 2**62 x 4 divided by zero
    # (SIGFPE: the process died), 2**62 + 1 x 4 wrapped to 4 and passed. In a subprocess, so
    # that a crash fails this test rather than ending the run.
    cases = [
        (4, 2**32, 2**32, False),
        (4, 2**62, 4, False),
        (4, 2**62 + 1, 4, False),
        (0, 2**62, 4, False),  # an empty tensor's shape: its product must fit in int64 too
        (0, 3, 5, True),
        (0, 0, 5, True),
        (4, 3, 1, False),  # 3 x 1 does not divide 4
        (4, 0, 4, False),
        (4, -4, -1, False),
        (12, 2, 3, True),
    ]
    script = (
        f"import sys; sys.path[:0] = {sys.path!r}\n"
        "import torch, test_adafactor as t\n"
        f"for numel, r, c, _ in {cases!r}:\n"
        "    try:\n"
        "        ts = [torch.zeros(numel) for _ in range(4)]\n"
        "        t._binding_call('adafactor', ts, rows=[r], cols=[c])\n"
        "        print('ok', flush=True)\n"
        "    except ValueError as e:\n"
        "        print(e, flush=True)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert run.returncode == 0, f"{run.returncode}: {run.stdout}{run.stderr}"
    lines = run.stdout.splitlines()
    assert len(lines) == len(cases), run.stdout
    for (numel, r, c, ok), line in zip(cases, lines, strict=True):
        if ok:
            assert line == "ok"
            continue
        assert f"rows[0] = {r} and cols[0] = {c} do not fit tensor 0 of {numel} elements" in line
        assert "expected positive rows[0] and cols[0]" in line
    _refused(
        "adafactor", ValueError, r"rows\[0\] = 4611686018427387905", rows=[2**62 + 1], cols=[4]
    )


@pytest.mark.parametrize("bad", [[3.5], ["a"], 3, "3", [2**64], {"r": 1}], ids=repr)
def test_binding_malformed_rows_cols_is_a_type_error(bad: Any) -> None:
    # Was pybind's "Unable to cast Python instance of type <class 'list'> to C++ type '?'".
    for name in ("rows", "cols"):
        shapes = {"rows": [3], "cols": [4], name: bad}
        match = rf"adafactor: {name} must be a list of ints, one per tensor, or None, got "
        _refused("adafactor", TypeError, match, **shapes)


@pytest.mark.parametrize("kernel", ["lion", "lamb"])
@pytest.mark.parametrize("shapes", [{"rows": [3], "cols": [4]}, {"rows": [7]}, {"cols": []}])
def test_binding_rows_cols_only_for_adafactor(kernel: str, shapes: dict[str, Any]) -> None:
    _refused(kernel, ValueError, rf"{kernel}: takes no rows/cols", **shapes)


@pytest.mark.parametrize(
    "shapes",
    [{"rows": [], "cols": [4]}, {"rows": [3], "cols": []}, {"rows": [3]}, {"cols": [4]},
     {"rows": [3, 4], "cols": [4, 3]}],
)  # fmt: skip
def test_binding_adafactor_rows_cols_one_per_tensor(shapes: dict[str, Any]) -> None:
    # rows=[] with cols=[4] ran unfactored, ignoring cols.
    _refused(
        "adafactor",
        ValueError,
        r"adafactor: (rows and cols must have one entry per tensor|expected rows and cols for each of the 1 tensors)",
        **shapes,
    )


def test_empty_param_of_huge_dims_steps_without_allocating_its_columns() -> None:
    """An empty (0, 2^31, 2^31) param is valid: its step advances the counter and allocates
    nothing per column (the column-mean loop once built 2^31-element vectors for it: ~16 GiB)."""
    p = torch.empty(0, 2**31, 2**31, requires_grad=True)
    p.grad = torch.empty(0, 2**31, 2**31)
    opt = Adafactor([p])
    opt.step()
    assert float(opt.state[p]["step"]) == 1.0


# ---- CUDA (cuda/adafactor.cu; these run only where a GPU is visible) ----------------------------

# Beyond SHAPES: empty ones; more rows than the row kernels' 1024 blocks x 8 warps, with chunks
# of 3 rows and a short last one (70001 x 2); 1x1 convolution weights (a row per element); a
# matrix whose row mean a whole block sums (2000 rows). A vector of more chunks than the flat
# kernels' 1024 blocks has a test of its own, marked no_sanitizer: gpu_check.sh leaves it out of
# its compute-sanitizer runs, where 16M elements would take most of its time.
CUDA_SHAPES: list[Any] = [
    *SHAPES,
    (0,),
    (0, 5),
    (64, 33),
    (1, 4097),
    (70_001, 2),
    (8, 4, 1, 1),
    (2000, 3),
    (70_001,),
]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("maximize", [False, True])
def test_cuda_matches_cpu(dtype: torch.dtype, maximize: bool) -> None:
    # One rule (gradfuse/math/adafactor.h) on both; the sums are reduced in another order on
    # CUDA, and its sum of u^2 always reads g again (the CPU's skips that where it can).
    kw: dict[str, Any] = {"lr": 0.05, "weight_decay": 0.01, "maximize": maximize}
    start, grads = random_problem(5, CUDA_SHAPES)
    a = leaves(start, dtype)
    b = [x.to(dtype).cuda().requires_grad_() for x in start]
    run_steps(Adafactor(a, **kw), a, grads)
    run_steps(Adafactor(b, **kw), b, [[g.cuda() for g in gs] for gs in grads])
    for x, y in zip(a, b, strict=True):
        assert_close(y.detach().cpu(), x.detach(), CPU_VS_CUDA[dtype], f"cuda vs cpu {x.shape}")


@pytest.mark.cuda
@pytest.mark.no_sanitizer
def test_long_vector_on_the_gpu_matches_cpu() -> None:
    start, grads = random_problem(3, [(1024 * 16384 + 3,), (5, 7)])
    a = leaves(start, torch.float32)
    b = [x.float().cuda().requires_grad_() for x in start]
    run_steps(Adafactor(a, lr=0.05), a, grads)
    run_steps(Adafactor(b, lr=0.05), b, [[g.cuda() for g in gs] for gs in grads])
    for x, y in zip(a, b, strict=True):
        assert_close(y.detach().cpu(), x.detach(), CPU_VS_CUDA[torch.float32], "long vector")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_trajectory_against_torch_on_cuda(dtype: torch.dtype) -> None:
    # torch.optim.Adafactor divides by the size of an empty param: none here.
    shapes = [s for s in CUDA_SHAPES if 0 not in s]
    start, grads = random_problem(20, shapes)
    ours = [x.to(dtype).cuda().requires_grad_() for x in start]
    theirs = [x.to(dtype).cuda().requires_grad_() for x in start]
    cuda_grads = [[g.cuda() for g in gs] for gs in grads]
    run_steps(Adafactor(ours, weight_decay=0.1), ours, cuda_grads)
    run_steps(reference(theirs, weight_decay=0.1), theirs, cuda_grads)
    for x, y in zip(ours, theirs, strict=True):
        assert_close(x.detach().cpu(), y.detach().cpu(), TRAJECTORY[dtype], f"{x.shape}")


@pytest.mark.cuda
def test_cuda_found_inf_changes_nothing() -> None:
    ps = [torch.randn(s, device="cuda", requires_grad=True) for s in ((7, 13), (4097,))]
    opt = Adafactor(ps)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()
    before = [p.detach().clone() for p in ps]
    state = copy.deepcopy(opt.state_dict())
    for p in ps:
        p.grad = torch.randn_like(p) * 256
    ps[0].grad[1, 2] = float("inf")
    opt.grad_scale = torch.tensor([256.0], device="cuda")
    opt.found_inf = torch.tensor([1.0], device="cuda")
    opt.step()
    for p, b in zip(ps, before, strict=True):
        assert torch.equal(p.detach(), b)
    for k, st in state["state"].items():
        for key, v in st.items():
            assert torch.equal(opt.state_dict()["state"][k][key], v), key


@pytest.mark.cuda
@pytest.mark.parametrize("factored", [False, True])
def test_cuda_kernels_skip_on_device_found_inf(factored: bool) -> None:
    # The Python layer reads found_inf on the host and makes no call; the kernels' own check
    # (capturable-style device scalars) is reached by calling the binding directly.
    core = gradfuse._native.core()
    shape = (7, 13) if factored else (4097,)
    ts = [torch.rand(shape, device="cuda") + 0.5 for _ in range(2)]
    ts += (
        [torch.rand(7, device="cuda"), torch.rand(13, device="cuda")]
        if factored
        else [torch.rand(shape, device="cuda")]
    )
    before = [t.clone() for t in ts]
    found_inf = torch.ones(1, device="cuda")
    fields = core.CODES["hyper_fields"]["adafactor"]
    core.optimizer_step(
        "adafactor", [[t.data_ptr()] for t in ts], [ts[0].numel()],
        core.CODES["dtype"]["float32"], ts[0].device.index, 0, [0.5] * len(fields),
        {"maximize": 0}, found_inf=found_inf.data_ptr(),
        rows=[7] if factored else [], cols=[13] if factored else [],
    )  # fmt: skip
    torch.cuda.synchronize()
    for t, b in zip(ts, before, strict=True):
        assert torch.equal(t, b)
