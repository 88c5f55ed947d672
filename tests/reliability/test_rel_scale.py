"""Scale: a tensor of more than 2^31 elements is updated correctly (64-bit indexing everywhere,
DESIGN.md §4). float16, so that param + grad fit in about 8.6 GB. Slow: run by hand
(`pytest -m slow tests/reliability/test_rel_scale.py`); the result is recorded in
benchmarks/cpu/scale_2e31.md.
"""

from __future__ import annotations

import resource
import time

import pytest
import torch

from gradfuse.functional import sgd_

BIG = (1 << 31) + 1025  # past 2^31, and not a multiple of any vector width
SMALL = 4099
NEEDED_BYTES = 2 * 2 * (BIG + SMALL) + (1 << 30)  # param + grad, float16, plus a margin


def _available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _all_equal(t: torch.Tensor, value: float) -> bool:
    # In chunks: one 2^31-element comparison would need another 2 GB.
    return all(bool((chunk == value).all()) for chunk in t.split(1 << 26))


@pytest.mark.slow
def test_sgd_updates_a_tensor_past_2_pow_31_elements() -> None:
    if _available_bytes() < NEEDED_BYTES:
        pytest.skip(f"needs {NEEDED_BYTES / 2**30:.1f} GiB of free memory")
    # A big tensor then a small one: the small one's elements sit past 2^31 in the concatenated
    # range the CPU engine splits over its threads.
    params = [torch.ones(BIG, dtype=torch.float16), torch.full((SMALL,), 2.0, dtype=torch.float16)]
    grads = [torch.ones(BIG, dtype=torch.float16), torch.ones(SMALL, dtype=torch.float16)]
    start = time.perf_counter()
    sgd_(params, grads, lr=0.5)
    elapsed = time.perf_counter() - start
    # Every element updated exactly once: a wrapped 32-bit index would leave the top ones at 1.0
    # and update low ones twice (0.0).
    assert _all_equal(params[0], 0.5)
    assert _all_equal(params[1], 1.5)
    assert float(params[0][-1]) == 0.5
    assert float(params[0][(1 << 31) - 1]) == 0.5
    assert float(params[0][1 << 31]) == 0.5
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nsgd_ over {BIG + SMALL} float16 elements: {elapsed:.2f} s, peak RSS {peak:.2f} GiB")
