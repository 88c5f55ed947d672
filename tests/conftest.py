"""Shared fixtures: dtypes, seeds; tests marked ``cuda`` skip with a reason when there is no GPU.

Devices: CPU tests run everywhere; a CUDA test carries ``@pytest.mark.cuda`` and runs where a GPU
is visible (``pytest -m cuda`` selects only those).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest
import torch

import gradfuse

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


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


@pytest.fixture(params=["dlpack", "getters"])
def layout_reader(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test with each way the native checks read a torch tensor's layout: torch's DLPack
    exchange table (the default where torch publishes one) and torch's Python getters."""
    from gradfuse import _buffers
    from gradfuse._native import core

    _buffers.as_buffer(torch.zeros(1), "warm-up", writable=False)  # registers the types
    in_use = core().use_dlpack(request.param == "dlpack")
    if request.param == "dlpack" and not in_use:
        assert not hasattr(torch.Tensor, "__dlpack_c_exchange_api__"), "table present, not used"
        pytest.skip("this torch publishes no DLPack exchange table")
    yield request.param
    core().use_dlpack(True)
