"""Shared fixtures: devices, dtypes, seeds; CUDA tests skip with a reason when there is no GPU."""

from __future__ import annotations

import os
import zlib

import pytest
import torch

import gradfuse

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def devices() -> list[str]:
    forced = os.environ.get("GRADFUSE_TEST_DEVICE")
    if forced:
        return forced.split(",")
    return ["cpu", "cuda"] if gradfuse.cuda_available() else ["cpu"]


def device_params() -> list[object]:
    """cpu always; cuda marked, so it runs on a GPU machine and reports a skip elsewhere."""
    return ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` run where a GPU is visible and skip, with the reason, elsewhere."""
    no_gpu = not gradfuse.cuda_available()
    reason = (
        "needs a CUDA GPU: this gradfuse build has no CUDA kernels"
        if not gradfuse.cuda_compiled()
        else "needs a CUDA GPU: CUDA kernels are compiled but no GPU is visible"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skipif(no_gpu, reason=reason))


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest) -> None:
    # A different but reproducible seed per test: fresh random inputs, never zeros.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
