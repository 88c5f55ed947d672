"""`gradfuse bench`: the command end to end on a tiny subset, its JSON, its registry of cases."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from gradfuse._cli import main
from gradfuse.bench import _registry
from gradfuse.bench._case import (
    MODEL,
    LossCase,
    OptimizerCase,
    Size,
    resolve,
    transformer_shapes,
)
from gradfuse.bench._progress import Progress
from gradfuse.bench._run import MAX_COPIES, Item, measure
from gradfuse.bench.cases import MIN_ACCESSES

OPTIMIZERS = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam", "Lion"]
LOSSES = [
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "nll_loss",
    "kl_div",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, Path, str]:
    out = tmp_path_factory.mktemp("bench")
    js, png, md = out / "r.json", out / "r.png", out / "r.md"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "bench",
                "--ops",
                "sgd,sgd_momentum_wd",
                "--sizes",
                "1M",
                "--device",
                "cpu",
                "--quick",
                "--repeat",
                "3",
                "--warmup",
                "1",
                "--json",
                str(js),
                "--plot",
                str(png),
                "--markdown",
                str(md),
            ]
        )
    return rc, json.loads(js.read_text()), png, buf.getvalue()


def test_quick_run_succeeds_and_prints_a_table(quick_run: tuple[int, dict, Path, str]) -> None:
    rc, _, _, out = quick_run
    assert rc == 0
    assert "ceiling" in out
    for word in ("sgd_momentum_wd", "gradfuse", "torch-forloop", "torch-foreach", "GB/s"):
        assert word in out


def test_json_schema(quick_run: tuple[int, dict, Path, str]) -> None:
    _, rep, _, _ = quick_run
    assert rep["schema"] == "gradfuse-bench/2"
    assert rep["command"].startswith("gradfuse bench --ops sgd,sgd_momentum_wd")
    for key in ("cpu_model", "cpu_count", "memory_bytes", "llc_bytes", "gpus"):
        assert key in rep["machine"]
    for key in ("gradfuse", "torch", "numpy", "python", "compiler", "cpu_isa", "gradfuse_threads"):
        assert rep["versions"][key] not in (None, "")
    ceil = rep["ceiling"]["cpu"]
    assert ceil["gbps"] > 0
    assert ceil["bytes_per_element"] == 8
    assert ceil["buffer_bytes"] >= 4 * rep["machine"]["llc_bytes"]
    assert rep["settings"]["repeat"] == 3
    results = rep["results"]
    assert {(r["op"], r["size"]) for r in results} == {("sgd", "1M"), ("sgd_momentum_wd", "1M")}
    for r in results:
        per = {"sgd": 12, "sgd_momentum_wd": 20}[r["op"]]
        assert r["min_bytes"] == per * r["numel"]
        assert r["min_bytes_per_element"] == per
        # Inputs smaller than the cache rotate over copies: a call never finds its data warm.
        llc = rep["machine"]["llc_bytes"]
        assert r["rotated_bytes"] >= 3 * llc or r["rotation_copies"] == MAX_COPIES
        assert r["rotation_copies"] == max(1, -(-3 * llc // r["min_bytes"]))
        assert "gradfuse" in r["providers"]
        assert not r["errors"]
        # The ceiling stream is timed in every round of the case, and the case's % of ceiling
        # is against those samples (the machine's bandwidth drifts during a run).
        stream = r["ceiling_samples_s"]
        assert len(stream) == 3
        assert r["ceiling_gbps"] == pytest.approx(
            ceil["bytes_moved"] / statistics.median(stream) / 1e9
        )
        for name, st in r["providers"].items():
            assert len(st["samples_s"]) == 3
            assert 0 < st["min_s"] <= st["median_s"] <= st["max_s"]
            assert st["gbps"] == pytest.approx(r["min_bytes"] / st["median_s"] / 1e9)
            assert st["pct_ceiling"] == pytest.approx(100 * st["gbps"] / r["ceiling_gbps"])
            if name != "gradfuse":
                assert r["speedup"][name] == pytest.approx(
                    st["median_s"] / r["providers"]["gradfuse"]["median_s"]
                )
        assert set(r["speedup"]) == set(r["providers"]) - {"gradfuse"}
        assert {"torch-forloop", "torch-foreach"} <= set(r["providers"])


def test_warm_cache_runs_keep_the_starting_ceiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stream between samples would evict the inputs --warm-cache keeps cached: no per-case
    # ceiling there, and the pages say what the percentages are against.
    js, md = tmp_path / "w.json", tmp_path / "w.md"
    args = ["bench", "--ops", "sgd", "--sizes", "4097", "--device", "cpu", "--quick"]
    args += ["--providers", "gradfuse", "--repeat", "2", "--warm-cache"]
    assert main([*args, "--json", str(js), "--markdown", str(md)]) == 0
    rep = json.loads(js.read_text())
    (r,) = rep["results"]
    assert r["ceiling_samples_s"] == []
    assert r["ceiling_gbps"] == rep["ceiling"]["cpu"]["gbps"]
    assert "every % ceiling is against this figure" in md.read_text()
    assert "timed in the same rounds" not in capsys.readouterr().out


def test_plot_is_a_png(quick_run: tuple[int, dict, Path, str]) -> None:
    _, _, png, _ = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_markdown_page(quick_run: tuple[int, dict, Path, str]) -> None:
    _, rep, png, _ = quick_run
    text = (png.parent / "r.md").read_text()
    assert rep["command"] in text
    assert rep["machine"]["cpu_model"] in text
    assert "| sgd_momentum_wd | 1M | gradfuse |" in text
    assert f"torch {rep['versions']['torch']}" in text


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--ops", "no_such_op"]) == 2
    assert "unknown op 'no_such_op'" in capsys.readouterr().err
    assert main(["bench", "--ops", "sgd", "--dtype", "float8"]) == 2
    assert main(["bench", "--ops", "sgd", "--providers", "jax"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0"], "--threads 0: expected a positive number"),
        (["--threads", "-3"], "--threads -3: expected a positive number"),
        (["--json", "{tmp}"], "is a directory"),
        (["--markdown", "{tmp}/a_file/r.md"], "is a file, not a folder"),
        (["--plot", "{tmp}"], "is a directory"),
    ],
)
def test_bad_run_options_exit_2_before_the_run(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Checked before anything runs (an output path used to be tried only after the whole run,
    # losing its results with a traceback; --threads 0 ended in one).
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["bench", "--ops", "sgd", "--sizes", "1K", "--repeat", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_list_names_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    for case in _registry.discover():
        assert case.name in out


def test_every_op_has_a_case() -> None:
    cases = _registry.discover()
    symbols = {c.symbol for c in cases}
    for name in OPTIMIZERS:
        assert f"gradfuse.optim.{name}" in symbols
    for name in LOSSES:
        assert f"gradfuse.nn.functional.{name}" in symbols
    assert "gradfuse.clip_grad_norm_" in symbols
    assert any(isinstance(c, OptimizerCase) and c.max_grad_norm for c in cases)
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    for c in cases:
        assert c.bytes_key in MIN_ACCESSES, c.name
        assert c.sizes(quick=False)
        assert c.sizes(quick=True)
        # Whatever is available in this build must be checkable by `gradfuse check`.
        assert c.check_configs or any(d.symbol == c.symbol and d.check_configs for d in cases), (
            c.name
        )


def test_minimal_bytes_table() -> None:
    f32 = {k: 4 * n for k, (n, _) in MIN_ACCESSES.items()}
    assert f32["sgd"] == 12
    assert f32["sgd_momentum"] == 20
    assert f32["adam"] == 28
    assert f32["adam_amsgrad"] == 36
    assert f32["adagrad"] == f32["rmsprop"] == f32["lion"] == 20
    assert f32["elementwise_loss"] == 12
    assert f32["cross_entropy"] == 8
    sgd = next(c for c in _registry.discover() if c.name == "sgd")
    assert sgd.min_bytes(Size("x", ((10,),)), itemsize=2) == 60  # scales with the dtype


def test_low_precision_bytes_follow_the_policy_tables() -> None:
    # adamw_lowprec's docstring table (bfloat16 params, but bf16state: float32 params) and
    # Adafactor's (reducing_precision: two passes, row/col state negligible), from one model.
    per = {c.name: c.bytes_per_param for c in _registry.discover() if "_lp_" in c.name}
    assert {k: per[f"adamw_lp_{k}"](2) for k in ("plain", "stochastic", "kahan", "master")} == {
        "plain": 14,
        "stochastic": 14,
        "kahan": 18,
        "master": 20,
    }
    assert per["adamw_lp_master_f32state"](2) == 28
    assert per["adamw_lp_f32state"](2) == 22
    assert per["adamw_lp_bf16state"](4) == 20
    assert per["adafactor_lp_plain"](2) == 10
    assert per["adafactor_lp_kahan"](2) == 14
    assert per["adafactor_lp_master"](2) == 18
    assert per["adafactor_lp_bf16state"](4) == 20


def test_model_like_set_has_real_layer_shapes() -> None:
    shapes = transformer_shapes(d=384, layers=12, vocab=8192, ctx=512)
    assert len(shapes) == 148 == MODEL.tensors
    assert (3 * 384, 384) in shapes
    assert (4 * 384, 384) in shapes
    assert (384,) in shapes
    assert 20e6 < MODEL.numel < 30e6


def test_missing_symbols_make_a_case_unavailable() -> None:
    assert resolve("gradfuse.optim.NoSuchOptimizer") is None
    assert resolve("gradfuse.no_such_module.thing") is None
    assert resolve("gradfuse.optim.SGD") is not None
    case = OptimizerCase("ghost", "adam", optimizer="NoSuchOptimizer")
    assert "not available in this build" in (case.unavailable() or "")


def test_selection_by_kind_and_module() -> None:
    cases = _registry.discover()
    losses = _registry.select(cases, "losses")
    assert losses
    assert all(c.kind == "loss" for c in losses)
    assert [c.name for c in _registry.select(cases, "sgd")] == ["sgd"]
    assert {c.name for c in _registry.select(cases, "rmsprop")} >= {"rmsprop"}


def test_loss_cases_time_forward_and_backward(capsys: pytest.CaptureFixture[str]) -> None:
    # The loss machinery, before gradfuse's losses exist: a case whose "gradfuse" side is
    # torch's own function runs every provider and reports the ratios.
    case = LossCase(
        "torch_mse", "elementwise_loss", symbol="torch.nn.functional.mse_loss", function="mse_loss"
    )
    item = Item(case, Size("4K", ((4096,),)), "float32", "cpu", ["gradfuse", "torch-eager"])
    with Progress(100, "test") as bar:
        measure(item, repeat=3, warmup=1, cache=1 << 20, ceiling_gbps=10.0, seed=0, bar=bar)
    r = item.result
    assert set(r["providers"]) == {"gradfuse", "torch-eager"}
    assert r["min_bytes"] == 12 * 4096
    assert math.isfinite(r["speedup"]["torch-eager"])
    assert r["speedup"]["torch-eager"] > 0


def test_unsupported_torch_provider_is_reported_not_fatal() -> None:
    # torch has no fused Lion: that provider is listed as unavailable, the rest run.
    from gradfuse.bench.cases.lion import CASES

    lion = CASES[0]
    case = OptimizerCase(
        "torch_lion",
        "lion",
        symbol="gradfuse.optim.SGD",  # any existing optimizer stands in for gradfuse's side
        optimizer="SGD",
        kwargs={"lr": 1e-3},
        torch_factory=lion.torch_factory,
    )
    item = Item(
        case, Size("1K", ((1024,),)), "float32", "cpu", ["gradfuse", "torch-forloop", "torch-fused"]
    )
    with Progress(100, "test") as bar:
        measure(item, repeat=2, warmup=1, cache=1 << 16, ceiling_gbps=10.0, seed=0, bar=bar)
    assert "torch-fused" in item.result["unavailable"]
    assert set(item.result["providers"]) == {"gradfuse", "torch-forloop"}


def test_torch_lion_reference_follows_the_paper() -> None:
    from gradfuse.bench.cases.lion import CASES

    lion = CASES[0]
    p0, g = torch.randn(257), torch.randn(257)
    lr, wd, b1, b2 = 1e-2, 0.1, 0.9, 0.99
    runs = []
    for foreach in (False, True):
        p = p0.clone().requires_grad_(True)
        p.grad = g.clone()
        opt = lion.torch_factory([p], foreach=foreach, lr=lr, betas=(b1, b2), weight_decay=wd)  # type: ignore[misc]
        opt.step()
        opt.step()
        runs.append(p.detach().clone())
    # By hand: m0 = 0; step 1 update sign((1-b1) g); m1 = (1-b2) g; step 2 sign(b1 m1 + (1-b1) g).
    p1 = p0 * (1 - lr * wd) - lr * torch.sign((1 - b1) * g)
    m1 = (1 - b2) * g
    p2 = p1 * (1 - lr * wd) - lr * torch.sign(b1 * m1 + (1 - b1) * g)
    torch.testing.assert_close(runs[0], p2)
    torch.testing.assert_close(runs[1], p2)


def test_every_sample_starts_after_the_threads_went_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    # Samples are interleaved across providers: each must start after quiesce() (torch's
    # OpenMP workers spin for milliseconds after a torch op and would otherwise share the cores
    # with the next provider's sample), the same way for every provider.
    from gradfuse.bench import _run

    events: list[str] = []
    monkeypatch.setattr(_run, "quiesce", lambda device: events.append("quiesce"))
    real_sample = _run._time_sample

    def sample(*args: object, **kwargs: object) -> float:
        events.append("sample")
        return real_sample(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_run, "_time_sample", sample)
    case = OptimizerCase("sgd_fair", "sgd", optimizer="SGD", kwargs={"lr": 1e-3})
    item = Item(case, Size("1K", ((1024,),)), "float32", "cpu", ["gradfuse", "torch-foreach"])
    with Progress(100, "test") as bar:
        measure(item, repeat=3, warmup=1, cache=1 << 16, ceiling_gbps=10.0, seed=0, bar=bar)
    assert events == ["quiesce", "sample"] * 6


def test_torch_without_fused_is_one_note_under_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # torch.optim's RMSprop and RAdam take no fused=: one note per table, not a row per case.
    js, md = tmp_path / "n.json", tmp_path / "n.md"
    args = ["bench", "--ops", "rmsprop,radam", "--sizes", "4097", "--device", "cpu", "--quick"]
    args += ["--providers", "gradfuse,torch-fused", "--repeat", "2", "--warmup", "0"]
    assert main([*args, "--json", str(js), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    note = "torch-fused not measured for rmsprop, radam: torch has no fused implementation"
    assert out.count(note) == 1
    page = md.read_text()
    assert page.count(f"- {note}") == 1
    for text in (out, page):
        assert "unexpected keyword" not in text
        assert "n/a" not in text
    for r in json.loads(js.read_text())["results"]:
        assert r["unavailable"] == {"torch-fused": "torch has no fused implementation"}
        assert set(r["providers"]) == {"gradfuse"}
