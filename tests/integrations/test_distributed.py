"""gradfuse optimizers inside torch.distributed: DDP, ZeRO and FSDP2 on 2 CPU processes (gloo).

One module-scoped launch (distributed_worker.py, two ranks, hosted on 127.0.0.1 only, with a
hard time limit) runs every case; the tests below compare what it saved: parameters identical
across ranks, and equal (tolerance table) to the same run with torch's optimizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import integration_cases
import pytest
import torch
from distributed_launch import launch

import tolerances

WORLD = 2
# Hard limit for the whole launch (both ranks import torch, then run every case; about 20-40 s
# on a loaded 2-core machine). A hang (a rank waiting for the other) fails the test instead of
# stalling the suite.
LAUNCH_TIMEOUT_S = 120
WORKER = Path(__file__).with_name("distributed_worker.py")

# The distributed runs compare float32 trajectories of 6 steps: the per-step ulp differences of
# the optimizers feed back through the model (TRAJECTORY tolerances, DESIGN.md §7).
TOL = tolerances.TRAJECTORY[torch.float32]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    names = [n for n, _ in integration_cases.available(integration_cases.DISTRIBUTED)]
    out = tmp_path_factory.mktemp("dist")
    return launch(WORKER, WORLD, out, [",".join(names)], LAUNCH_TIMEOUT_S)


def assert_same_across_ranks(results: list[dict[str, Any]], key: str, params: Any) -> None:
    for r in range(1, WORLD):
        for i, (a, b) in enumerate(
            zip(params(results[0][key]), params(results[r][key]), strict=True)
        ):
            assert torch.equal(a, b), f"{key}: param {i} differs between rank 0 and rank {r}"


def assert_params_close(got: list[torch.Tensor], want: list[torch.Tensor], msg: str) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        tolerances.assert_close(a, b, TOL, msg=f"{msg} param {i}")


CASES = integration_cases.params(integration_cases.DISTRIBUTED)


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_ddp(results: list[dict[str, Any]], name: str, kwargs: dict[str, Any]) -> None:
    ours, theirs = f"{name}/ddp/gradfuse", f"{name}/ddp/torch"
    assert_same_across_ranks(results, ours, lambda x: x)
    assert_params_close(results[0][ours], results[0][theirs], f"DDP {name} vs torch")
    # The run moved the model: a comparison of untouched weights would prove nothing.
    start = [p.detach() for p in _initial_params()]
    assert any(not torch.equal(a, b) for a, b in zip(results[0][ours], start, strict=True))


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_zero_redundancy_optimizer(
    results: list[dict[str, Any]], name: str, kwargs: dict[str, Any]
) -> None:
    ours, theirs = results[0][f"{name}/zero/gradfuse"], results[0][f"{name}/zero/torch"]
    assert_same_across_ranks(results, f"{name}/zero/gradfuse", lambda x: x["uninterrupted"])
    # ZeRO with gradfuse == ZeRO with torch == plain DDP with torch (same math, sharded state).
    assert_params_close(ours["uninterrupted"], theirs["uninterrupted"], f"ZeRO {name} vs torch")
    assert_params_close(
        ours["uninterrupted"], results[0][f"{name}/ddp/torch"], f"ZeRO {name} vs DDP torch"
    )
    # consolidate_state_dict -> torch.save -> torch.load(weights_only=True) -> load_state_dict:
    # resuming with gradfuse gives exactly the uninterrupted run; resuming gradfuse's
    # checkpoint with torch's optimizer gives torch's result.
    for r in range(WORLD):
        got = results[r][f"{name}/zero/gradfuse"]
        for i, (a, b) in enumerate(
            zip(got["reloaded_into_gradfuse"], got["uninterrupted"], strict=True)
        ):
            assert torch.equal(a, b), f"rank {r}: resumed ZeRO {name} differs at param {i}"
    assert_params_close(
        ours["reloaded_into_torch"], theirs["uninterrupted"], f"ZeRO {name} resumed by torch"
    )
    assert_params_close(
        theirs["reloaded_into_gradfuse"],
        theirs["uninterrupted"],
        f"ZeRO torch {name} resumed by gradfuse",
    )


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_fsdp2(results: list[dict[str, Any]], name: str, kwargs: dict[str, Any]) -> None:
    ours, theirs = results[0][f"{name}/fsdp2/gradfuse"], results[0][f"{name}/fsdp2/torch"]
    assert_same_across_ranks(results, f"{name}/fsdp2/gradfuse", lambda x: x["params"])
    assert_params_close(ours["params"], theirs["params"], f"FSDP2 {name} vs torch")
    # Each rank stepped its own shard (Linear(16, 33).weight: 17 + 16 rows), and the state is
    # made of DTensors, as with torch's optimizer.
    assert results[0][f"{name}/fsdp2/gradfuse"]["local_shapes"][0] == (17, 16)
    assert results[1][f"{name}/fsdp2/gradfuse"]["local_shapes"][0] == (16, 16)
    assert ours["state_types"] == theirs["state_types"]
    assert "DTensor" in ours["state_types"]
    # Sharded training is the same math as DDP (gradients averaged over the ranks).
    assert_params_close(ours["params"], results[0][f"{name}/ddp/torch"], f"FSDP2 {name} vs DDP")


def _initial_params() -> list[torch.Tensor]:
    import distributed_worker  # tests/integrations is on sys.path (pytest's prepend mode)

    return list(distributed_worker.make_model().parameters())
