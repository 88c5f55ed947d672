"""gradfuse.optim.Muon on sharded params (DTensor, FSDP2's fully_shard) on 2 CPU processes (gloo).

One module-scoped launch (muon_sharded_worker.py) runs every case; the tests compare what it
saved with the single-process (unsharded) Muon each rank ran on the same data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import muon_sharded_worker as worker
import pytest
import torch
from distributed_launch import launch

import tolerances

WORLD = 2
# Both ranks import torch, then run 2 x (4 + 4 + 2) optimizer steps and 2 x 4 training steps:
# about 10 s on a loaded 2-core machine.
LAUNCH_TIMEOUT_S = 120
WORKER = Path(__file__).with_name("muon_sharded_worker.py")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return launch(WORKER, WORLD, tmp_path_factory.mktemp("muon_sharded"), [], LAUNCH_TIMEOUT_S)


def _same_across_ranks(results: list[dict[str, Any]], key: str, field: str) -> None:
    for i, (a, b) in enumerate(zip(results[0][key][field], results[1][key][field], strict=True)):
        assert torch.equal(a, b), f"{key}: {field} {i} differs between the ranks"


@pytest.mark.parametrize("options", list(worker.OPTIONS))
def test_dtensor_params_equal_unsharded_muon(results: list[dict[str, Any]], options: str) -> None:
    key = f"dtensor/{options}"
    ours = results[0][key]
    _same_across_ranks(results, key, "sharded")
    # Each rank held its torch.chunk cut of every Shard(d) param: uneven rows and columns, the
    # last dim of a 3-D weight, an empty shard on rank 1; replicated params whole.
    assert ours["local_shapes"][:5] == [(17, 16), (16, 17), (17, 16), (6, 4, 3), (1, 8)]
    assert results[1][key]["local_shapes"][:5] == [(16, 16), (16, 16), (16, 16), (6, 4, 2), (0, 8)]
    assert ours["local_shapes"][5] == (12, 12)
    # The gathered matrix is the one the unsharded prepare pass writes and the iteration is the
    # same: the unsharded optimizer's results (float32 step tolerance over 4 steps: TRAJECTORY).
    start, _ = worker._problem()
    for i, (a, b) in enumerate(zip(ours["sharded"], ours["plain"], strict=True)):
        tolerances.assert_close(a, b, tolerances.TRAJECTORY[torch.float32], f"param {i}")
        assert not torch.equal(a, start[i]), f"param {i} did not move"
    # The state too (momentum_buffer of the Muon params, step/exp_avg/exp_avg_sq of the AdamW
    # ones), kept as DTensors like the params.
    for i, (s, t) in enumerate(zip(ours["state"], ours["plain_state"], strict=True)):
        assert s.keys() == t.keys(), i
        for k in s:
            tolerances.assert_close(s[k], t[k], tolerances.TRAJECTORY[torch.float32], f"{i} {k}")
    for i, types in enumerate(ours["state_types"]):
        assert "DTensor" in types, (i, types)


@pytest.mark.parametrize("options", list(worker.OPTIONS))
def test_state_dict_round_trip(results: list[dict[str, Any]], options: str) -> None:
    # Saved after 2 steps, loaded into a fresh optimizer over fresh DTensor params, run to the
    # end: exactly the uninterrupted run, on every rank, with DTensor state again.
    for r in range(WORLD):
        got = results[r][f"dtensor/{options}"]
        for i, (a, b) in enumerate(zip(got["resumed"], got["sharded"], strict=True)):
            assert torch.equal(a, b), f"rank {r}: resumed param {i} differs"
        assert got["resumed_state_types"] == got["state_types"]


def test_fsdp2_training_equals_single_process(results: list[dict[str, Any]]) -> None:
    ours = results[0]["fsdp2"]
    _same_across_ranks(results, "fsdp2", "sharded")
    # fully_shard cut every param along dim 0 (Linear(16, 33).weight: 17 + 16 rows).
    assert (17, 16) in ours["local_shapes"]
    assert (16, 16) in results[1]["fsdp2"]["local_shapes"]
    assert "DTensor" in ours["state_types"]
    # Each rank trained on its half of every batch (FSDP2 averages the gradients), the reference
    # on the whole batch in one process: the same math, so the float32 trajectories agree.
    for i, (a, b) in enumerate(zip(ours["sharded"], ours["plain"], strict=True)):
        tolerances.assert_close(a, b, tolerances.TRAJECTORY[torch.float32], f"param {i}")


@pytest.mark.parametrize("norm_type", worker.NORM_TYPES, ids=str)
def test_gradient_norms_of_sharded_grads(results: list[dict[str, Any]], norm_type: float) -> None:
    # grad_norms / clip_grad_norm_ (and so max_grad_norm) over DTensor gradients: the norms of
    # the whole gradients, on every rank (each rank's own shards alone would give other norms),
    # against float64 norms of the same values (the NORM table's float32 entry).
    for r in range(WORLD):
        got = results[r]["norms"]
        for what in ("each", "total"):
            tolerances.assert_close(
                got[f"sharded/{norm_type}/{what}"].double(),
                got[f"float64/{norm_type}/{what}"],
                tolerances.NORM[torch.float32],
                f"rank {r} {what}",
            )
