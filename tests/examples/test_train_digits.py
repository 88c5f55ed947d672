"""examples/train_digits.py: gradfuse's run and torch's agree step by step, and both learn."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch

from tolerances import TRAINING_CURVE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_digits.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module
    spec.loader.exec_module(module)
    return module


def test_short_run_curves_agree_and_both_learn() -> None:
    td = _load()
    result = td.train(steps=40, progress=False)
    ours = torch.tensor(result.gradfuse.losses, dtype=torch.float64)
    theirs = torch.tensor(result.torch.losses, dtype=torch.float64)
    assert len(ours) == len(theirs) == 40
    torch.testing.assert_close(ours, theirs, rtol=TRAINING_CURVE.rtol, atol=TRAINING_CURVE.atol)
    for run in (result.gradfuse, result.torch):
        assert sum(run.losses[-10:]) / 10 < 0.8 * sum(run.losses[:5]) / 5, run.name
        assert run.test_accuracy > 0.5, run.name
        assert len(run.step_times) == 40
        assert min(run.step_times) > 0
    n_test = 360
    assert abs(result.gradfuse.test_accuracy - result.torch.test_accuracy) <= 1 / n_test + 1e-9


def test_cli_writes_the_plot(tmp_path: Path, capsys: object) -> None:
    td = _load()
    png = tmp_path / "curves.png"
    assert td.main(["--steps", "12", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
