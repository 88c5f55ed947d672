"""Every case file runs end to end, before (and independently of) gradfuse's own kernels.

Each gradfuse symbol a case needs is stood in for by torch's own implementation (Lion: the
torch reference in cases/lion.py), so `gradfuse check` must pass every row and `gradfuse bench`
must time every provider: this catches a case whose options torch does not accept, a wrong
input maker, a size that does not parse, before the real kernels are merged.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

import gradfuse
import gradfuse.optim
from gradfuse._cli import main
from gradfuse.bench import _registry

OPTIMIZERS = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam"]
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


@pytest.fixture
def torch_standins(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradfuse.bench.cases.lion import CASES as LION

    for name in OPTIMIZERS:
        monkeypatch.setattr(gradfuse.optim, name, getattr(torch.optim, name), raising=False)

    def lion(params: Any, **kw: Any) -> Any:
        assert LION[0].torch_factory is not None
        return LION[0].torch_factory(params, foreach=False, **kw)

    monkeypatch.setattr(gradfuse.optim, "Lion", lion, raising=False)
    nn = types.ModuleType("gradfuse.nn")
    functional = types.ModuleType("gradfuse.nn.functional")
    for name in LOSSES:
        setattr(functional, name, getattr(torch.nn.functional, name))
    nn.functional = functional  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gradfuse.nn", nn)
    monkeypatch.setitem(sys.modules, "gradfuse.nn.functional", functional)
    monkeypatch.setattr(gradfuse, "clip_grad_norm_", torch.nn.utils.clip_grad_norm_, raising=False)


@pytest.mark.usefixtures("torch_standins")
def test_every_case_checks_against_torch(capsys: pytest.CaptureFixture[str]) -> None:
    # bfloat16: every option set, through the low-precision rule (the float32 path is
    # covered by test_check.py on the real kernels).
    rc = main(["check", "--device", "cpu", "--dtype", "bfloat16", "--steps", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    checked = {line.split()[0] for line in out.splitlines() if line.endswith("PASS")}
    # torch's AdamW has no max_grad_norm=: that case alone reports itself unavailable.
    assert "not checked: adamw_clip: gradfuse.optim.AdamW has no max_grad_norm=" in out
    for case in _registry.discover():
        if case.check_configs and case.name != "adamw_clip":
            assert case.name in checked, case.name


@pytest.mark.usefixtures("torch_standins")
def test_every_case_benchmarks(tmp_path: Path) -> None:
    js = tmp_path / "all.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "bench",
                "--quick",
                "--device",
                "cpu",
                "--sizes",
                "4K,16x100,mlp-small",
                "--repeat",
                "1",
                "--warmup",
                "0",
                "--warm-cache",
                "--json",
                str(js),
            ]
        )
    assert rc == 0, buf.getvalue()
    rep = json.loads(js.read_text())
    ran = {r["op"] for r in rep["results"]}
    # torch's AdamW has neither max_grad_norm= nor the low-precision keywords (state_dtype: the
    # 8-bit case too): those cases report themselves unavailable. The training-step case runs at
    # its small MLP. LAMB and Adafactor have no stand-ins: their policy cases run gradfuse's own,
    # at float32 the 8-bit LAMB (against torch-side references) and Adafactor's bfloat16 state
    # (gradfuse only); the bfloat16-param policies leave a row that says they are for bfloat16.
    reducing = {c.name for c in _registry.discover() if c.module == "reducing_precision"}
    at_float32 = {"lamb8bit", "adafactor_lp_bf16state"}
    policies = ("adamw_lowprec", "adamw8bit", "reducing_precision")
    expected = {c.name for c in _registry.discover() if c.module not in policies} - {
        "adamw_clip",
        "train_step_adamw_clip",
    }
    assert ran == expected | reducing
    for r in rep["results"]:
        assert r["rotation_copies"] == 1  # --warm-cache
        assert not r["errors"], (r["op"], r["errors"])
        if r["op"] in reducing - at_float32:
            assert not r["providers"], r["op"]
            continue
        assert "gradfuse" in r["providers"]
        if r["op"] == "adafactor_lp_bf16state":
            continue  # gradfuse only: torch has no precision policies
        # Training steps: torch's foreach and fused AdamW only.
        assert {"torch-forloop", "torch-eager", "torch-foreach"} & set(r["providers"])
    fused = {r["op"] for r in rep["results"] if "torch-fused" in r["providers"]}
    assert {"sgd", "adam", "adamw", "adagrad"} <= fused  # torch has fused=True on the CPU
    assert "lion" not in fused
