"""`gradfuse check`: passes on this machine, and fails when a kernel is wrong."""

from __future__ import annotations

import pytest
import torch

from gradfuse._cli import main
from gradfuse.bench._case import FunctionCase, LossCase, OptimizerCase
from gradfuse.bench._check import check_case


def test_check_passes_on_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "gradfuse check:" in out
    assert " 0 FAIL" in out
    assert "sgd" in out
    assert "adamw8bit" in out  # 8-bit state, a step at a time
    assert "adagrad8bit" in out
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        assert dtype in out


def test_check_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--ops", "nope"]) == 2
    assert "unknown op" in capsys.readouterr().err


# The comparison logic itself, on stand-ins whose "gradfuse" side is torch (must pass) or a
# subtly wrong function (must fail): the check can tell right from wrong.


def _wrong_mse(x: torch.Tensor, t: torch.Tensor, **kw: object) -> torch.Tensor:
    return torch.nn.functional.mse_loss(x * (1 + 1e-4), t, **kw)  # type: ignore[arg-type]


def test_loss_comparison_passes_torch_and_fails_a_wrong_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setattr(sys.modules[__name__], "wrong_mse", _wrong_mse, raising=False)
    good = LossCase(
        "mse",
        "elementwise_loss",
        symbol="torch.nn.functional.mse_loss",
        function="mse_loss",
        check_configs=({}, {"reduction": "none"}),
    )
    bad = LossCase("mse", "elementwise_loss", symbol=f"{__name__}.wrong_mse", function="mse_loss")
    for dtype in ("float32", "float64", "bfloat16"):
        assert all(r.status == "PASS" for r in check_case(good, "cpu", dtype, 3, 0))
    for dtype in ("float32", "float64"):
        rows = check_case(bad, "cpu", dtype, 3, 0)
        assert rows, dtype
        assert all(r.status == "FAIL" for r in rows), dtype


def test_optimizer_comparison_passes_torch_and_fails_another_rule() -> None:
    same = OptimizerCase(
        "adam",
        "adam",
        symbol="torch.optim.Adam",
        optimizer="Adam",
        kwargs={"lr": 1e-2},
        check_configs=({}, {"amsgrad": True}),
    )
    other = OptimizerCase(
        "adam",
        "adam",
        symbol="torch.optim.AdamW",
        optimizer="Adam",
        kwargs={"lr": 1e-2, "weight_decay": 0.1},
    )
    for dtype in ("float32", "float64", "float16"):
        assert all(r.status == "PASS" for r in check_case(same, "cpu", dtype, 5, 0)), dtype
    rows = check_case(other, "cpu", "float64", 5, 0)  # AdamW's decay is not Adam's
    assert rows
    assert rows[0].status == "FAIL"
    assert "params" in rows[0].note


def test_function_comparison() -> None:
    case = FunctionCase(
        "clip",
        "clip_grad_norm",
        symbol="torch.nn.utils.clip_grad_norm_",
        kind="function",
        kwargs={"max_norm": 1.0},
        check_configs=({}, {"norm_type": float("inf")}),
    )
    assert all(r.status == "PASS" for r in check_case(case, "cpu", "float32", 1, 0))
