"""examples/train_muon.py: on a short run, Muon (hidden matrices) + AdamW (the rest) in one
gradfuse optimizer trains the digits MLP as well as AdamW alone does (fixed seeds: the same
numbers on every run on one machine). On this small problem neither is clearly ahead (the
curves cross), so the test asks for training, not for a winner."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_muon.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_muon", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_muon"] = module
    spec.loader.exec_module(module)
    return module


def test_muon_recipe_trains_the_mlp() -> None:
    ex = _load()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls: threads only spin on a loaded 2-core machine
    try:
        runs = ex.train(steps=150)
    finally:
        torch.set_num_threads(threads)
    muon, adamw = runs["muon"], runs["adamw"]
    assert muon.losses[0] == adamw.losses[0]  # same model, same first batch
    tail = {name: sum(r.losses[-20:]) / 20 for name, r in runs.items()}
    assert tail["muon"] < 0.05 * muon.losses[0], tail
    assert tail["adamw"] < 0.05 * adamw.losses[0], tail
    assert muon.test_accuracy > 0.9
