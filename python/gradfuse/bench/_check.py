"""``gradfuse check``: does gradfuse compute the right thing on this machine?

Every available case (the same ones ``gradfuse bench`` times) runs on every available device,
in every dtype and its main option combinations, on fresh random inputs of odd sizes
(1, 7, 4097, empty, a matrix), against torch:

- optimizers: a trajectory of ``--steps`` steps against torch's for-loop (``foreach=False``);
- ``clip_grad_norm_``: the returned norm and the clipped gradients;
- losses: the loss and the gradient with respect to the input (torch autograd).

float32/float64 are judged by the tolerance table the tests use (``gradfuse._tolerances``);
float16/bfloat16 by its low-precision rule: gradfuse's error against a float64 run must be at
most twice torch's own error in that dtype (plus two units of the dtype's epsilon).
Exit status 1 when anything fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gradfuse.bench._case import (
    Case,
    FunctionCase,
    LossCase,
    OptimizerCase,
    resolve,
    torch_dtype,
)

OPTIM_SHAPES: tuple[tuple[int, ...], ...] = ((1,), (7,), (4097,), (0,), (33, 17))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Validate every gradfuse kernel available in this build, on every available device, "
        "against torch on fresh random inputs; exit status 1 on any failure."
    )
    parser.add_argument("--ops", default="all", help="comma list of ops (as in gradfuse bench)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--dtype", default="all", help="comma list of dtypes, or 'all' (default)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per trajectory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--failures-only", action="store_true", help="print only failing rows")


@dataclass
class Row:
    op: str
    config: str
    device: str
    dtype: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    tolerance: str = ""
    status: str = "PASS"  # PASS, FAIL, SKIP
    note: str = ""


def _label(cfg: dict[str, Any]) -> str:
    parts = []
    for k, v in cfg.items():
        if k == "_target":
            parts.append(f"target={v}")
        elif callable(v):
            parts.append(f"{k}=tensor")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts) or "defaults"


class _Judge:
    """Accumulates comparisons into one row: the worst errors, and whether all were within."""

    def __init__(self, row: Row, dtype: Any) -> None:
        import gradfuse._tolerances as tol

        self.tol = tol
        self.row = row
        self.dtype = dtype
        self.low = dtype in tol.LOW_PRECISION_DTYPES

    def same_dtype(self, ours: Any, theirs: Any, table: dict[Any, Any], what: str) -> None:
        a, r = self.tol.max_errors(ours, theirs)
        t = table[self.dtype]
        self.row.max_abs = max(self.row.max_abs, a)
        self.row.max_rel = max(self.row.max_rel, r)
        self.row.tolerance = str(t)
        if not self.tol.within(ours, theirs, t):
            self._fail(f"{what}: max abs {a:.3g}, max rel {r:.3g} beyond {t}")

    def low_precision(self, ours: Any, theirs: Any, reference: Any, what: str) -> None:
        import torch

        our_err, their_err, bound = self.tol.low_precision_bound(ours, theirs, reference)
        ref = reference.detach().double()
        finite = ref[torch.isfinite(ref)]
        scale = float(finite.abs().max()) if finite.numel() else 0.0
        self.row.max_abs = max(self.row.max_abs, our_err)
        self.row.max_rel = max(self.row.max_rel, our_err / scale if scale else 0.0)
        self.row.tolerance = (
            f"<= {self.tol.LOW_PRECISION_FACTOR:g}x torch's error vs float64 "
            f"+ {self.tol.LOW_PRECISION_ULPS:g} eps"
        )
        if not our_err <= bound:
            self._fail(
                f"{what}: error vs float64 {our_err:.3g} > bound {bound:.3g} "
                f"(torch's own error {their_err:.3g})"
            )

    def _fail(self, why: str) -> None:
        self.row.status = "FAIL"
        self.row.note = f"{self.row.note}; {why}" if self.row.note else why


def _flat(ts: Sequence[Any]) -> Any:
    import torch

    return torch.cat([t.detach().reshape(-1).cpu() for t in ts]) if ts else torch.zeros(0)


def _check_optimizer(
    case: OptimizerCase | FunctionCase,
    cfg: dict[str, Any],
    device: str,
    dtype: str,
    steps: int,
    seed: int,
) -> Row:
    import torch

    dt = torch_dtype(dtype)
    row = Row(case.name, _label(cfg), device, dtype)
    judge = _Judge(row, dt)
    gen = torch.Generator().manual_seed(seed)
    # torch's clip_grad_norm_ refuses an empty tensor for the inf norm ("no identity"): the
    # gradient functions are checked without one; optimizers step it (a no-op) like torch.
    shapes = getattr(case, "check_shapes", ()) or (
        OPTIM_SHAPES if isinstance(case, OptimizerCase) else OPTIM_SHAPES[:3] + OPTIM_SHAPES[4:]
    )
    p0 = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    n_steps = steps if isinstance(case, OptimizerCase) else 1
    grads = [
        [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(n_steps)
    ]
    outputs: dict[str, Any] = {}

    def stepper(provider: str) -> Callable[[list[Any]], Callable[[], object]]:
        def make(params: list[Any]) -> Callable[[], object]:
            if isinstance(case, FunctionCase):

                def call() -> None:
                    outputs[provider] = case.call(provider, params, **cfg)

                return call
            if provider == "gradfuse":
                return case.gradfuse_optimizer(params, **cfg).step  # type: ignore[no-any-return]
            opt = case.torch_optimizer(params, foreach=False, fused=False, **cfg)
            return case.torch_step(opt, params, foreach=False)

        return make

    def result(params: list[Any], provider: str) -> list[Any]:
        if isinstance(case, FunctionCase):
            norm = outputs[provider]
            return [*(p.grad for p in params), torch.as_tensor(norm).reshape(1)]
        return params

    def run(provider: str, run_dtype: Any) -> Any:
        # clone(): .to() of a tensor already in that dtype is the tensor itself, and the
        # runs must not share (and mutate) one start.
        params = [p.to(dt).to(run_dtype).to(device).clone().requires_grad_(True) for p in p0]
        step = stepper(provider)(params)
        for gs in grads:
            for p, g in zip(params, gs, strict=True):
                p.grad = g.to(dt).to(run_dtype).to(device).clone()
            step()
        return _flat(result(params, provider))

    try:
        theirs = run("torch-forloop", dt)
        reference = run("torch-forloop", torch.float64) if judge.low else None
    except Exception as exc:  # noqa: BLE001 - torch cannot do it here: nothing to compare with
        row.status, row.note = "SKIP", f"torch reference failed: {type(exc).__name__}: {exc}"
        return row
    try:
        ours = run("gradfuse", dt)
    except Exception as exc:  # noqa: BLE001 - a gradfuse error is a failure, reported
        row.status, row.note = "FAIL", f"gradfuse raised {type(exc).__name__}: {exc}"
        return row
    what = "params" if isinstance(case, OptimizerCase) else "grads and norm"
    if judge.low:
        judge.low_precision(ours, theirs, reference, what)
    else:
        table = getattr(judge.tol, getattr(case, "check_table", "") or "TRAJECTORY")
        if "clip" in case.name:
            # Clipping reaches the kernels as a float32 coefficient (GradScaling's clip_coef), so
            # float64 results carry its rounding: the CLIPPED_FLOAT64 row of the table says why.
            table = {**table, torch.float64: judge.tol.CLIPPED_FLOAT64}
        judge.same_dtype(ours, theirs, table, what)
    return row


def _check_8bit(
    name: str, cfg: dict[str, Any], device: str, dtype: str, steps: int, seed: int
) -> Row | None:
    """``gradfuse.optim.<name>8bit`` with every param 8-bit (``min_8bit_size=1``), one step
    at a time from the same dequantized state as the float32 reference (params, absmax, and
    each code a nearest one); None where 8-bit state does not apply (it is for params of
    float32, float16 or bfloat16)."""
    import torch

    import gradfuse._tolerances as tol
    from gradfuse.testing._quant8 import compare_8bit_steps, judge_8bit_steps

    dt = torch_dtype(dtype)
    if dt == torch.float64:
        return None
    row = Row(f"{name.lower()}8bit", _label(cfg), device, dtype)
    gen = torch.Generator().manual_seed(seed)
    params = [
        torch.randn(s, generator=gen).to(device, dt).requires_grad_(True) for s in OPTIM_SHAPES
    ]
    grads = [[torch.randn(s, generator=gen) for s in OPTIM_SHAPES] for _ in range(steps)]
    try:
        found = compare_8bit_steps(name, params, grads, **cfg)
    except Exception as exc:  # noqa: BLE001 - a gradfuse error is a failure, reported
        row.status, row.note = "FAIL", f"raised {type(exc).__name__}: {exc}"
        return row
    row.max_abs, row.max_rel = tol.max_errors(found.flat("params"), found.flat("params64"))
    row.tolerance = (
        f"a step: <= {tol.LOW_PRECISION_FACTOR:g}x float32's error vs float64 "
        f"+ {tol.LOW_PRECISION_ULPS:g} eps + conditioning"
    )
    problems = judge_8bit_steps(found)
    if problems:
        row.status, row.note = "FAIL", "; ".join(problems)
    return row


def _loss_inputs(
    case: LossCase, cfg: dict[str, Any], shape: tuple[int, ...], seed: int
) -> tuple[Any, Any, dict[str, Any]]:
    """float64 input and target, and the keyword arguments with tensors made (float64)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x, t = case.inputs(shape, gen)
    x = x.double()
    t = t.double() if t.is_floating_point() else t
    kw: dict[str, Any] = {}
    for k, v in {**case.kwargs, **cfg}.items():
        if k == "_target":
            if v == "probs":
                t = torch.randn(shape, generator=gen, dtype=torch.float64).softmax(-1)
            elif v == "log":
                t = t.log()
        elif callable(v):
            kw[k] = v(shape, gen).double()
        else:
            kw[k] = v
    return x, t, kw


def _loss_and_grad(fn: Callable[..., Any], x: Any, t: Any, kw: dict[str, Any], go: Any) -> Any:
    import torch

    xi = x.detach().clone().requires_grad_(True)
    loss = fn(xi, t, **kw)
    (g,) = torch.autograd.grad(loss, xi, grad_outputs=go.to(loss.dtype) if go is not None else None)
    return torch.cat([loss.detach().reshape(-1).cpu(), g.detach().reshape(-1).cpu()])


def _check_loss(case: LossCase, cfg: dict[str, Any], device: str, dtype: str, seed: int) -> Row:
    import torch

    dt = torch_dtype(dtype)
    row = Row(case.name, _label(cfg), device, dtype)
    judge = _Judge(row, dt)
    ours_fn = case.loss_function("gradfuse")
    torch_fn = case.loss_function("torch-eager")
    for i, shape in enumerate(case.check_shapes):
        x64, t64, kw64 = _loss_inputs(case, cfg, shape, seed + i)

        def cast(v: Any, to: Any) -> Any:
            if isinstance(v, torch.Tensor):
                v = v.to(device)
                return v.to(to) if v.is_floating_point() else v
            return v

        x, t = cast(x64, dt), cast(t64, dt)
        kw = {k: cast(v, dt) for k, v in kw64.items()}
        go = None
        if kw.get("reduction") == "none":
            # An unreduced loss: backpropagate fresh random weights, not ones.
            out_shape = torch_fn(x64, t64, **kw64).shape
            gen = torch.Generator().manual_seed(seed + 1000 + i)
            go = torch.randn(out_shape, generator=gen, dtype=torch.float64).to(device)
        try:
            theirs = _loss_and_grad(torch_fn, x, t, kw, go)
            reference = None
            if judge.low:
                xr, tr = cast(x.double(), torch.float64), cast(t, torch.float64)
                kwr = {k: cast(v, torch.float64) for k, v in kw.items()}
                reference = _loss_and_grad(torch_fn, xr, tr, kwr, go)
        except Exception as exc:  # noqa: BLE001 - no torch reference: nothing to compare with
            row.status, row.note = "SKIP", f"torch reference failed: {type(exc).__name__}: {exc}"
            return row
        try:
            ours = _loss_and_grad(ours_fn, x, t, kw, go)
        except Exception as exc:  # noqa: BLE001 - a gradfuse error is a failure, reported
            row.status, row.note = "FAIL", f"gradfuse raised {type(exc).__name__}: {exc}"
            return row
        what = f"loss and grad, shape {shape}"
        if judge.low:
            judge.low_precision(ours, theirs, reference, what)
        else:
            judge.same_dtype(ours, theirs, judge.tol.LOSS, what)
    return row


def check_case(case: Case, device: str, dtype: str, steps: int, seed: int) -> list[Row]:
    rows = []
    if isinstance(case, LossCase):
        for cfg in case.check_configs:
            rows.append(_check_loss(case, cfg, device, dtype, seed))
    elif isinstance(case, OptimizerCase | FunctionCase):
        for cfg in case.check_configs:
            rows.append(_check_optimizer(case, cfg, device, dtype, steps, seed))
    if isinstance(case, OptimizerCase):
        for name, cfg in case.check_8bit:
            row = _check_8bit(name, cfg, device, dtype, steps, seed)
            rows += [row] if row is not None else []
    return rows


def print_rows(rows: list[Row], failures_only: bool) -> None:
    shown = [r for r in rows if r.status != "PASS" or not failures_only]
    if not shown:
        return
    w_op = max(len("op"), *(len(r.op) for r in shown))
    w_cfg = min(44, max(len("options"), *(len(r.config) for r in shown)))
    head = (
        f"{'op':<{w_op}}  {'options':<{w_cfg}}  {'device':<6}  {'dtype':<8}  "
        f"{'max abs':>9}  {'max rel':>9}  {'tolerance':<40}  result"
    )
    print(head)
    print("-" * len(head))
    for r in shown:
        cfg = r.config if len(r.config) <= w_cfg else r.config[: w_cfg - 3] + "..."
        errs = (
            f"{r.max_abs:>9.2e}  {r.max_rel:>9.2e}" if r.status != "SKIP" else f"{'':>9}  {'':>9}"
        )
        print(
            f"{r.op:<{w_op}}  {cfg:<{w_cfg}}  {r.device:<6}  {r.dtype:<8}  {errs}  "
            f"{r.tolerance:<40}  {r.status}"
        )
        if r.note:
            print(f"{'':<{w_op}}    {r.note}")


def run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        print(
            "gradfuse check compares against torch: pip install 'gradfuse[torch]'", file=sys.stderr
        )
        return 2
    from gradfuse.bench import _registry
    from gradfuse.bench._progress import Progress
    from gradfuse.bench._run import _devices, _dtypes

    try:
        cases = _registry.select(_registry.discover(), args.ops)
        devices = _devices(args.device)
        dtypes = _dtypes(args.dtype)
    except ValueError as exc:
        print(f"gradfuse check: {exc}", file=sys.stderr)
        return 2
    if args.steps < 1:
        print("gradfuse check: --steps must be >= 1", file=sys.stderr)
        return 2
    del torch
    available = [c for c in cases if c.unavailable() is None]
    skipped = [(c.name, c.unavailable()) for c in cases if c.unavailable() is not None]
    rows: list[Row] = []
    t0 = time.monotonic()
    work = [(c, d, t) for c in available for d in devices for t in dtypes]
    with Progress(len(work), "gradfuse check") as bar:
        for case, device, dtype in work:
            bar.set(f"{case.name} {device} {dtype}")
            if resolve(case.symbol) is not None:
                rows += check_case(case, device, dtype, args.steps, args.seed)
            bar.update()
    print_rows(rows, args.failures_only)
    for name, why in skipped:
        print(f"not checked: {name}: {why}")
    n_pass = sum(r.status == "PASS" for r in rows)
    n_fail = sum(r.status == "FAIL" for r in rows)
    n_skip = sum(r.status == "SKIP" for r in rows)
    print(
        f"\ngradfuse check: {n_pass} PASS, {n_fail} FAIL, {n_skip} SKIP "
        f"({len(available)} ops on {', '.join(devices)}, {time.monotonic() - t0:.1f} s)"
    )
    if not rows:
        print("gradfuse check: nothing was checked (no op available)", file=sys.stderr)
        return 1
    return 1 if n_fail else 0
