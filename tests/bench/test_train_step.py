"""The whole-training-step bench cases (cases/train_step.py) at tiny sizes."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from gradfuse._cli import main
from gradfuse.bench import _registry
from gradfuse.bench._case import Unavailable
from gradfuse.bench._timing import MIN_SAMPLE_S, inner_count
from gradfuse.bench.cases.train_step import (
    BLOCK_S,
    CASES,
    SIZES,
    TrainStepCase,
    build_model,
)


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_describe_the_models_parameters(name: str) -> None:
    size = SIZES[name]
    model, x, y = build_model(size, "cpu", seed=0)
    assert size.shapes == tuple(tuple(p.shape) for p in model.parameters())
    assert model(x).shape == y.shape


def test_every_provider_trains_the_same_model() -> None:
    # Same model and batch for every provider (the first loss is bitwise the same), and each
    # step trains it (the loss goes down); with clipping too.
    for case in CASES:
        assert isinstance(case, TrainStepCase)
        for size in (SIZES["mlp-small"], SIZES["transformer-small"]):
            first = {}
            for provider in case.providers(compile=False):
                runner = case.build(provider, size, "float32", "cpu", copies=1, seed=3)
                losses = [float(runner.calls[0]()) for _ in range(4)]  # type: ignore[arg-type]
                first[provider] = losses[0]
                assert losses[-1] < losses[0], (case.name, size.name, provider, losses)
            assert len(set(first.values())) == 1, first


def test_bench_runs_the_training_steps(tmp_path: Path) -> None:
    js = tmp_path / "steps.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "bench",
                "--ops",
                "train_step",
                "--sizes",
                "mlp-small,transformer-small",
                "--device",
                "cpu",
                "--repeat",
                "2",
                "--warmup",
                "1",
                "--json",
                str(js),
            ]
        )
    out = buf.getvalue()
    assert rc == 0, out
    assert "training steps on cpu" in out
    rep = json.loads(js.read_text())
    got = {(r["op"], r["size"]) for r in rep["results"]}
    assert got == {
        (c, s)
        for c in ("train_step_adamw", "train_step_adamw_clip")
        for s in ("mlp-small", "transformer-small")
    }
    for r in rep["results"]:
        assert r["kind"] == "train_step"
        assert not r["errors"], r["errors"]
        assert set(r["providers"]) == {"gradfuse", "torch-foreach", "torch-fused"}
        assert r["rotation_copies"] == 1  # the model is its own working set
        for st in r["providers"].values():
            assert st["gbps"] is None  # no bandwidth figure for a whole step
            assert st["pct_ceiling"] is None
            assert len(st["samples_s"]) == 2
            assert st["calls_per_sample"] >= 1
        for v in r["speedup"].values():
            assert math.isfinite(v)
            assert v > 0


def test_a_sample_is_a_block_of_steps() -> None:
    # Back-to-back steps for at least BLOCK_S per sample (an update-only case: MIN_SAMPLE_S).
    case = CASES[0]
    assert case.sample_seconds() == BLOCK_S > MIN_SAMPLE_S
    assert inner_count(0.025, case.sample_seconds()) == 4
    assert inner_count(0.025) == 1


def test_selected_by_module_and_not_by_other_sizes() -> None:
    cases = _registry.discover()
    names = {c.name for c in _registry.select(cases, "train_step")}
    assert names == {"train_step_adamw", "train_step_adamw_clip"}
    case = CASES[0]
    assert case.parse_size("16M") is None
    assert case.parse_size("mlp") is SIZES["mlp"]
    assert [s.name for s in case.sizes(quick=False)] == ["mlp", "transformer"]
    with pytest.raises(Unavailable, match="float32"):
        case.build("gradfuse", SIZES["mlp-small"], "bfloat16", "cpu", 1, 0)
