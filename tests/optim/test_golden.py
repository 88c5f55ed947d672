"""Golden trajectories: a refactor of the optimizer engine changes no bit of any result.

Every case runs a few steps of one optimizer (or functional call) from seeded random inputs and
hashes (sha256) the bytes of the final params, of every state tensor and of the step counters.
The hashes in ``tests/optim/golden/*.json`` were written by the code before the refactor; the
test recomputes them under each CPU ISA the machine supports, with 1 and with 2 threads (which
must agree bit for bit: the work split depends only on the sizes), and compares.

Cases: every optimizer of :mod:`gradfuse.optim` x the options that change its math x float32,
float64, float16, bfloat16 params; then the extensions (a tensor lr, ``max_grad_norm``,
GradScaler's ``grad_scale``/``found_inf`` with one skipped step, and the low-precision options
where they are valid); the functional layer on numpy arrays; and ``capturable=True`` through the
functional layer on CPU tensors (the optimizer classes refuse it for CPU params, as torch's do).
Params: sizes 7, 1, 0, 4097 and 40003 (above the parallel grain, so two threads split it) in two
param groups with different hyperparameters, plus one param without a gradient.

A case that fails names itself (optimizer/options/dtype/extension). Regenerate the goldens only
when a change is *meant* to change results, from the tree that has that change, and say why in
the commit::

    PYTHONPATH=python python tests/optim/test_golden.py --regenerate

Every ISA path must give the same bits (DESIGN.md section 4), so a case stores one hash that
every ISA is checked against, including ISAs the generating CPU lacked (``measured_isas`` in
each file says which ran); a case whose ISAs differed would store one hash per ISA.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import gradfuse
import gradfuse.functional as gf
import gradfuse.optim as go

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SIZES = (7, 1, 0, 4097, 40003)  # group 0: the first three (+ a param without grad); group 1
STEPS = 8  # RAdam's rectification starts at step 6 (beta2 = 0.999): both branches run
SKIPPED_STEP = 3  # the step that GradScaler's found_inf = 1 skips (amp extensions)
GRAD_SCALE = 1024.0  # a power of two, as GradScaler's scales are
THREADS = (1, 2)
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


# --- the cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One trajectory: ``group`` names the golden file (an optimizer, or ``functional``)."""

    group: str
    options: tuple[tuple[str, Any], ...]  # constructor (or functional) keyword arguments
    dtype: str
    extension: str = "plain"
    ext_options: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def id(self) -> str:
        opts = ",".join(f"{k}={_fmt(v)}" for k, v in self.options) or "defaults"
        return f"{self.group}/{opts}/{self.dtype}/{self.extension}"


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ",".join(_fmt(x) for x in v) + ")"
    return repr(v)


def _grid(**axes: list[Any]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def _sgd_variants() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for base in _grid(weight_decay=[0.0, 1e-2], maximize=[False, True]):
        out.append({"lr": 0.1, **base})
        for nesterov in (False, True):
            out.append({"lr": 0.1, "momentum": 0.9, "nesterov": nesterov, **base})
        out.append({"lr": 0.1, "momentum": 0.9, "dampening": 0.1, **base})
    return out


def _adam_variants() -> list[dict[str, Any]]:
    return [
        {"lr": 1e-2, **v}
        for v in _grid(
            amsgrad=[False, True],
            weight_decay=[0.0, 1e-2],
            maximize=[False, True],
            decoupled_weight_decay=[False, True],
        )
    ]


# Per optimizer: the class and the variants of the options that change the math.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], list[dict[str, Any]]]] = {
    "SGD": (go.SGD, _sgd_variants()),
    "Adam": (go.Adam, _adam_variants()),
    "AdamW": (
        go.AdamW,
        [
            {"lr": 1e-2, **v}
            for v in _grid(amsgrad=[False, True], weight_decay=[0.0, 1e-2], maximize=[False, True])
        ],
    ),
    "Adagrad": (
        go.Adagrad,
        [
            {"lr": 0.1, **v}
            for v in _grid(
                lr_decay=[0.0, 1e-2],
                initial_accumulator_value=[0.0, 0.1],
                weight_decay=[0.0, 1e-2],
                maximize=[False, True],
            )
        ],
    ),
    "RMSprop": (
        go.RMSprop,
        [
            {"lr": 1e-2, **v}
            for v in _grid(
                centered=[False, True],
                momentum=[0.0, 0.9],
                weight_decay=[0.0, 1e-2],
                maximize=[False, True],
            )
        ],
    ),
    "Adamax": (
        go.Adamax,
        [{"lr": 1e-2, **v} for v in _grid(weight_decay=[0.0, 1e-2], maximize=[False, True])],
    ),
    "NAdam": (
        go.NAdam,
        [
            {"lr": 1e-2, **v}
            for v in _grid(
                decoupled_weight_decay=[False, True],
                momentum_decay=[4e-3, 1e-2],
                weight_decay=[0.0, 1e-2],
                maximize=[False, True],
            )
        ],
    ),
    "RAdam": (
        go.RAdam,
        [
            {"lr": 1e-2, **v}
            for v in _grid(
                decoupled_weight_decay=[False, True],
                weight_decay=[0.0, 1e-2],
                maximize=[False, True],
            )
        ],
    ),
    "Lion": (
        go.Lion,
        [
            {"lr": 1e-2, **v}
            for v in _grid(
                betas=[(0.9, 0.99), (0.95, 0.98)],
                weight_decay=[0.0, 1e-2],
                maximize=[False, True],
            )
        ],
    ),
}

# Extensions, each on two variants of every optimizer (the first, with its defaults, and the
# last, with every option on) and every dtype.
AMP = {"amp": "scaled"}
EXTENSIONS: dict[str, dict[str, Any]] = {
    "tensor_lr": {"tensor_lr": True},
    "max_grad_norm": {"max_grad_norm": 1.0},
    "amp": AMP,
    "amp_unscaled": {"amp": "unscaled"},  # scaler.unscale_ already called: grad_scale None
    "amp+max_grad_norm": {**AMP, "max_grad_norm": 1.0},
}
# capturable=True: torch's classes refuse it for CPU params (as gradfuse's do), so it runs
# through the functional layer on CPU tensors (the path CUDA graphs use: counters advanced and
# scalars computed with tensor ops).
CAPTURABLE: dict[str, dict[str, Any]] = {
    "capturable": {"capturable": True},
    "capturable+tensor_lr": {"capturable": True, "tensor_lr": True},
    "capturable+amp": {"capturable": True, **AMP},
}
# Low-precision policies by param dtype (the valid ones; test_lowprec_optim checks refusals).
F32, BF16 = torch.float32, torch.bfloat16
HALF_POLICIES: dict[str, dict[str, Any]] = {
    "master": {"master_weights": True},
    "master+f32_state": {"master_weights": True, "state_dtype": F32},
    "f32_state": {"state_dtype": F32},
    "master+amp": {"master_weights": True, **AMP},
}
LOWPREC: dict[str, dict[str, dict[str, Any]]] = {
    "float16": HALF_POLICIES,
    "bfloat16": {
        **HALF_POLICIES,
        "stochastic": {"rounding": "stochastic"},
        "stochastic+f32_state": {"rounding": "stochastic", "state_dtype": F32},
        "stochastic+amp+max_grad_norm": {"rounding": "stochastic", **AMP, "max_grad_norm": 1.0},
        "kahan": {"kahan": True},
        "kahan+f32_state": {"kahan": True, "state_dtype": F32},
        "kahan+amp": {"kahan": True, **AMP},
    },
    "float32": {
        "bf16_state": {"state_dtype": BF16},
        "bf16_state+amp": {"state_dtype": BF16, **AMP},
    },
}


def _items(d: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(d.items()))


def optimizer_cases(name: str) -> list[Case]:
    _, variants = OPTIMIZERS[name]
    cases = [Case(name, _items(v), dt) for v in variants for dt in DTYPES]
    for v in (variants[0], variants[-1]):
        for dt in DTYPES:
            cases += [Case(name, _items(v), dt, e, _items(o)) for e, o in EXTENSIONS.items()]
            for e, o in LOWPREC.get(dt, {}).items():
                cases.append(Case(name, _items(v), dt, e, _items(o)))
    return cases


# The functional layer on numpy arrays: (function, the state it keeps, two variants).
FUNCTIONAL: dict[str, tuple[Callable[..., None], list[dict[str, Any]]]] = {
    "sgd_": (
        gf.sgd_,
        [
            {"lr": 0.1},
            {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-2, "maximize": True},
            {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-2},
        ],
    ),
    "adam_": (
        gf.adam_,
        [
            {"lr": 1e-2},
            {
                "lr": 1e-2,
                "amsgrad": True,
                "weight_decay": 1e-2,
                "maximize": True,
                "decoupled_weight_decay": True,
            },
        ],
    ),
    "adamw_": (gf.adamw_, [{"lr": 1e-2}, {"lr": 1e-2, "amsgrad": True, "maximize": True}]),
    "adamax_": (gf.adamax_, [{"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 1e-2, "maximize": True}]),
    "nadam_": (
        gf.nadam_,
        [
            {"lr": 1e-2},
            {
                "lr": 1e-2,
                "weight_decay": 1e-2,
                "momentum_decay": 1e-2,
                "decoupled_weight_decay": True,
                "maximize": True,
            },
        ],
    ),
    "radam_": (
        gf.radam_,
        [
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 1e-2, "decoupled_weight_decay": True, "maximize": True},
        ],
    ),
    "adagrad_": (
        gf.adagrad_,
        [{"lr": 0.1}, {"lr": 0.1, "lr_decay": 1e-2, "weight_decay": 1e-2, "maximize": True}],
    ),
    "rmsprop_": (
        gf.rmsprop_,
        [
            {"lr": 1e-2},
            {
                "lr": 1e-2,
                "centered": True,
                "momentum": 0.9,
                "weight_decay": 1e-2,
                "maximize": True,
            },
        ],
    ),
    "lion_": (gf.lion_, [{"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 1e-2, "maximize": True}]),
}
NUMPY_DTYPES = ("float32", "float64", "float16")


CAPTURABLE_FNS = ("adam_", "adamw_", "adamax_", "nadam_", "radam_", "rmsprop_")


def functional_cases() -> list[Case]:
    """numpy arrays through every functional; CPU tensors through capturable=True."""
    cases = [
        Case("functional", (("fn", fn), *_items(v)), dt, "numpy")
        for fn, (_, variants) in FUNCTIONAL.items()
        for v in variants
        for dt in NUMPY_DTYPES
    ]
    cases += [
        Case("functional", (("fn", fn), *_items(v)), dt, e, _items(o))
        for fn in CAPTURABLE_FNS
        for v in FUNCTIONAL[fn][1]
        for dt in DTYPES
        for e, o in CAPTURABLE.items()
    ]
    return cases


GROUPS = [*OPTIMIZERS, "functional"]


def cases_of(group: str) -> list[Case]:
    return functional_cases() if group == "functional" else optimizer_cases(group)


# --- running a case -----------------------------------------------------------------------


def _seed(case: Case) -> int:
    return zlib.crc32(case.id.encode())


@dataclass
class Inputs:
    """A case's start and gradients, already in its dtype (and, under amp, scaled by
    GRAD_SCALE, with an inf in the step that found_inf skips). The runs clone the params; the
    gradients are shared: optimizers only read them (a run that wrote them would show as a
    difference between the thread counts)."""

    params: list[torch.Tensor]
    no_grad: torch.Tensor
    grads: list[list[torch.Tensor]]
    amp: str | None


def make_inputs(case: Case) -> Inputs:
    """Fresh seeded normal values (never zeros), drawn in float64 and rounded to the dtype."""
    gen = torch.Generator().manual_seed(_seed(case))
    dtype = DTYPES[case.dtype]
    amp = dict(case.ext_options).get("amp")
    scale = GRAD_SCALE if amp == "scaled" else 1.0

    def rand(n: int, factor: float = 1.0) -> torch.Tensor:
        return (torch.randn(n, generator=gen, dtype=torch.float64) * factor).to(dtype)

    params = [rand(n) for n in SIZES]
    no_grad = rand(5)
    grads = [[rand(n, scale) for n in SIZES] for _ in range(STEPS)]
    if amp is not None:
        grads[SKIPPED_STEP - 1][0][0] = float("inf")
    return Inputs(params, no_grad, grads, amp)


def _bytes_of(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


class Digest:
    """sha256 over named, typed values; the name, dtype and shape go in with the bytes."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            head = f"{name}:torch:{value.dtype}:{tuple(value.shape)}:"
            self._h.update(head.encode() + _bytes_of(value))
        elif isinstance(value, np.ndarray):
            head = f"{name}:numpy:{value.dtype}:{value.shape}:"
            self._h.update(head.encode() + np.ascontiguousarray(value).tobytes())
        else:
            self._h.update(f"{name}:{type(value).__name__}:{value!r};".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _group1_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """Group 1's hyperparameters differ from group 0's: half the lr, double the weight decay,
    and another momentum / beta1 where the optimizer has one."""
    out: dict[str, Any] = {"lr": options["lr"] * 0.5}
    if options.get("weight_decay"):
        out["weight_decay"] = options["weight_decay"] * 2
    if options.get("momentum"):
        out["momentum"] = 0.8
    if "betas" in options:
        out["betas"] = (0.85, options["betas"][1])
    return out


def run_optimizer(case: Case, inputs: Inputs) -> str:
    cls, _ = OPTIMIZERS[case.group]
    options = dict(case.options)
    ext = dict(case.ext_options)
    ext.pop("amp", None)
    tensor_lr = ext.pop("tensor_lr", False)
    params = [p.clone().requires_grad_(True) for p in inputs.params]
    no_grad = inputs.no_grad.clone().requires_grad_(True)
    g0 = {"params": [params[0], params[1], no_grad, params[2]]}
    g1 = {"params": params[3:], **_group1_overrides(options)}
    if tensor_lr:
        options["lr"] = torch.tensor(options["lr"])
        g1["lr"] = torch.tensor(g1["lr"])
    torch.manual_seed(_seed(case))  # stochastic rounding draws its seed here
    opt = cls([g0, g1], **options, **ext)
    for step, grads in enumerate(inputs.grads, start=1):
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if inputs.amp is not None:  # what torch.amp.GradScaler.step sets around step()
            scaled = inputs.amp == "scaled"
            opt.grad_scale = torch.tensor(GRAD_SCALE) if scaled else None  # type: ignore[attr-defined]
            opt.found_inf = torch.tensor(float(step == SKIPPED_STEP))  # type: ignore[attr-defined]
        opt.step()
        if inputs.amp is not None:
            del opt.grad_scale, opt.found_inf  # type: ignore[attr-defined]
    digest = Digest()
    for i, p in enumerate([*params, no_grad]):
        digest.add(f"param{i}", p)
        state = opt.state.get(p, {})
        for key in sorted(state):
            digest.add(f"param{i}.{key}", state[key])
    return digest.hexdigest()


def _functional_state(fn: str, options: dict[str, Any], params: list[Any]) -> dict[str, Any]:
    """The functional's state lists (numpy arrays or tensors, like ``params``), initialised as
    torch initialises them; counters are float32 scalars, torch's convention."""
    is_np = isinstance(params[0], np.ndarray)

    def zeros() -> list[Any]:
        return [np.zeros_like(p) if is_np else torch.zeros_like(p) for p in params]

    def counters(value: float = 0.0) -> list[Any]:
        return [np.array(value, np.float32) if is_np else torch.tensor(value) for _ in params]

    if fn == "sgd_":
        return {"momentum_buffers": [None] * len(params)} if options.get("momentum") else {}
    if fn in ("adam_", "adamw_"):
        state = {"exp_avgs": zeros(), "exp_avg_sqs": zeros(), "state_steps": counters()}
        if options.get("amsgrad"):
            state["max_exp_avg_sqs"] = zeros()
        return state
    if fn == "adamax_":
        return {"exp_avgs": zeros(), "exp_infs": zeros(), "state_steps": counters()}
    if fn == "nadam_":
        return {
            "exp_avgs": zeros(),
            "exp_avg_sqs": zeros(),
            "mu_products": counters(1.0),
            "state_steps": counters(),
        }
    if fn == "radam_":
        return {"exp_avgs": zeros(), "exp_avg_sqs": zeros(), "state_steps": counters()}
    if fn == "adagrad_":
        return {"state_sums": zeros(), "state_steps": counters()}
    if fn == "rmsprop_":
        state = {"square_avgs": zeros(), "state_steps": counters()}
        if options.get("centered"):
            state["grad_avgs"] = zeros()
        if options.get("momentum"):
            state["momentum_buffer_list"] = zeros()
        return state
    if fn == "lion_":
        return {"exp_avgs": zeros()}
    raise AssertionError(fn)


def run_functional(case: Case, inputs: Inputs) -> str:
    options = dict(case.options)
    func = FUNCTIONAL[options.pop("fn")][0]
    ext = dict(case.ext_options)
    ext.pop("amp", None)
    if ext.pop("tensor_lr", False):
        options["lr"] = torch.tensor(options["lr"])
    options.update(ext)
    params: list[Any] = [p.clone() for p in inputs.params]
    steps: list[list[Any]] = inputs.grads
    if case.extension == "numpy":
        params = [p.numpy() for p in params]
        steps = [[g.numpy() for g in grads] for grads in steps]
    state = _functional_state(case.options[0][1], options, params)
    for step, grads in enumerate(steps, start=1):
        if inputs.amp is not None:
            options["grad_scale"] = torch.tensor(GRAD_SCALE) if inputs.amp == "scaled" else None
            options["found_inf"] = torch.tensor(float(step == SKIPPED_STEP))
        func(params, grads, **state, **options)
    digest = Digest()
    for i, p in enumerate(params):
        digest.add(f"param{i}", p)
    for key in sorted(state):
        for i, value in enumerate(state[key]):
            digest.add(f"{key}{i}", value)
    return digest.hexdigest()


def run_case(case: Case, inputs: Inputs) -> str:
    if case.group == "functional":
        return run_functional(case, inputs)
    return run_optimizer(case, inputs)


# --- ISAs, threads, the golden files ------------------------------------------------------


def available_isas() -> list[str]:
    return str(gradfuse._native.core().cpu_isas()).split(",")


class _Settings:
    """Sets the ISA and thread count for a block and restores both after it."""

    def __init__(self, isa: str, threads: int) -> None:
        self.isa, self.threads = isa, threads

    def __enter__(self) -> None:
        core = gradfuse._native.core()
        self._isa, self._threads = core.cpu_isa(), gradfuse.get_num_threads()
        core.set_cpu_isa(self.isa)
        gradfuse.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        gradfuse._native.core().set_cpu_isa(self._isa)
        gradfuse.set_num_threads(self._threads)


def compute(group: str, isas: list[str]) -> Iterator[tuple[Case, dict[tuple[str, int], str]]]:
    """Each case of ``group``: its hash per (ISA, thread count). torch's own ops (the casts,
    state allocation) run on one thread: its spinning OpenMP workers slow everything down on a
    loaded 2-core machine."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for case in cases_of(group):
            inputs = make_inputs(case)
            hashes = {}
            for isa in isas:
                for threads in THREADS:
                    with _Settings(isa, threads):
                        hashes[isa, threads] = run_case(case, inputs)
            yield case, hashes
    finally:
        torch.set_num_threads(torch_threads)


def golden_path(group: str) -> Path:
    return GOLDEN_DIR / f"{group}.json"


def load_golden(group: str) -> tuple[list[str], dict[str, str | dict[str, str]]]:
    """(the ISAs the hashes were measured under, case id -> sha256). A case's hash is one
    string where it is the same under every ISA, as DESIGN.md §4 requires (every ISA path runs
    the same rule without contraction; tests/reliability/test_rel_determinism checks it too), so
    it holds for an ISA the generating CPU lacked as well; otherwise a dict ISA -> sha256."""
    raw = json.loads(golden_path(group).read_text())
    return list(raw["measured_isas"]), dict(raw["cases"])


def expected_hash(golden: dict[str, str | dict[str, str]], case_id: str, isa: str) -> str | None:
    want = golden.get(case_id)
    return want if isinstance(want, str) or want is None else want.get(isa)


def save_golden(group: str, isas: list[str], table: dict[str, dict[str, str]]) -> None:
    cases: dict[str, str | dict[str, str]] = {}
    for cid in sorted(table):
        values = set(table[cid].values())
        cases[cid] = values.pop() if len(values) == 1 else dict(sorted(table[cid].items()))
    GOLDEN_DIR.mkdir(exist_ok=True)
    text = json.dumps({"measured_isas": sorted(isas), "cases": cases}, indent=0)
    golden_path(group).write_text(text + "\n")


# --- the test -----------------------------------------------------------------------------

ISAS = ("baseline", "avx2", "avx512")


def test_isa_names_are_the_ones_the_goldens_know() -> None:
    # A new ISA (or a renamed one) must be added to ISAS, not pass unchecked.
    assert set(available_isas()) <= set(ISAS), available_isas()


@pytest.mark.parametrize(
    "isa",
    [
        pytest.param(
            isa,
            marks=pytest.mark.skipif(
                isa not in available_isas(),
                reason=f"this CPU cannot run the {isa} engine: the golden test checks "
                f"{available_isas()}",
            ),
        )
        for isa in ISAS
    ],
)
def test_isa_is_checked(isa: str) -> None:
    """Every ISA the golden test runs under really switches the engine copy it checks (a skip
    says which engine this CPU cannot run)."""
    with _Settings(isa, 1):
        assert gradfuse._native.core().cpu_engine_isa() == isa


@pytest.mark.parametrize("group", GROUPS)
def test_golden_trajectories(group: str) -> None:
    isas = available_isas()
    _, golden = load_golden(group)
    missing, wrong, thread_dependent = [], [], []
    seen = set()
    for case, hashes in compute(group, isas):
        seen.add(case.id)
        for isa in isas:
            if hashes[isa, 1] != hashes[isa, 2]:
                thread_dependent.append(f"{case.id} [{isa}]")
            want = expected_hash(golden, case.id, isa)
            if want is None:
                missing.append(f"{case.id} [{isa}]")
            elif hashes[isa, 1] != want:
                wrong.append(f"{case.id} [{isa}]")
    stale = sorted(set(golden) - seen)
    problems = [
        (f"{len(wrong)} results changed bits ({len(seen)} cases x {isas})", wrong),
        (f"{len(thread_dependent)} results differ between 1 and 2 threads", thread_dependent),
        (f"{len(missing)} results have no golden hash (regenerate)", missing),
        (f"{len(stale)} golden cases are no longer run (regenerate)", stale),
    ]
    report = [f"{title}:\n  " + "\n  ".join(ids[:30]) for title, ids in problems if ids]
    assert not report, f"{group}:\n" + "\n".join(report)


# --- regeneration -------------------------------------------------------------------------


def regenerate(groups: list[str]) -> None:
    isas = available_isas()
    for group in groups:
        start = time.perf_counter()
        old_isas, old = load_golden(group) if golden_path(group).exists() else ([], {})
        table: dict[str, dict[str, str]] = {}
        for case, hashes in compute(group, isas):
            for isa in isas:
                if hashes[isa, 1] != hashes[isa, 2]:
                    raise SystemExit(f"{case.id}: 1 and 2 threads differ under {isa}")
                table.setdefault(case.id, {})[isa] = hashes[isa, 1]
        for cid, by_isa in table.items():  # ISAs this CPU lacks keep their own stored hashes
            stored = old.get(cid)
            if isinstance(stored, dict):
                for isa, h in stored.items():
                    by_isa.setdefault(isa, h)
        save_golden(group, sorted(set(isas) | set(old_isas)), table)
        took = time.perf_counter() - start
        split = sum(1 for v in table.values() if len(set(v.values())) > 1)
        print(
            f"{group}: {len(table)} cases under {','.join(isas)}, {split} differing between "
            f"ISAs ({took:.1f} s)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true", help="rewrite the golden files")
    parser.add_argument("--list", action="store_true", help="print every case id")
    parser.add_argument("groups", nargs="*", default=GROUPS, help=f"some of {GROUPS}")
    args = parser.parse_args()
    if args.list:
        for group in args.groups:
            for case in cases_of(group):
                print(case.id)
    elif args.regenerate:
        regenerate(args.groups)
    else:
        parser.print_help()


if __name__ == "__main__":
    sys.exit(main())
