"""examples/train_causal_lm.py: the Trainer run with gradfuse's AdamW and cross-entropy agrees
with the run on the Trainer's defaults step by step, and writes its figure (a short run)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tolerances import TRAINING_CURVE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_causal_lm.py"


def _load() -> ModuleType:
    os.environ["HF_HUB_OFFLINE"] = "1"
    spec = importlib.util.spec_from_file_location("train_causal_lm", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_causal_lm"] = module
    spec.loader.exec_module(module)
    return module


def test_corpus_ships_with_torch() -> None:
    ex = _load()
    text = ex.corpus()
    assert len(text) > 10_000
    rows = ex.blocks(text, 64)
    assert len(rows) == len(text) // 64
    assert all(int(r["input_ids"].max()) < ex.VOCAB for r in rows)


def test_short_run_curves_agree_and_plot(tmp_path: Path) -> None:
    ex = _load()
    ours, theirs = ex.train(steps=8, batch=4, seq=32, progress=False)
    a = torch.tensor(ours.losses, dtype=torch.float64)
    b = torch.tensor(theirs.losses, dtype=torch.float64)
    assert len(a) == len(b) == 8
    torch.testing.assert_close(a, b, rtol=TRAINING_CURVE.rtol, atol=TRAINING_CURVE.atol)
    assert a[-1] < a[0]  # it learns (bytes of English text are far from uniform)
    assert len(ours.step_times) == len(theirs.step_times) == 8
    png = tmp_path / "lm.png"
    ex.plot(ours, theirs, str(png), "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_no_steps() -> None:
    ex = _load()
    with pytest.raises(SystemExit):
        ex.main(["--steps", "0"])
