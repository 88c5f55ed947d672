"""Clocks and the bandwidth ceiling.

CPU: ``time.perf_counter`` around one sample. CUDA: events recorded on the current stream,
read after the end event completes. A sample is ``inner`` back-to-back calls (enough for a
sample to last about ``MIN_SAMPLE_S``), each on the next rotation copy of the inputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

MIN_SAMPLE_S = 2e-3
MAX_INNER = 1000


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# How long the CPU stays busy after a torch op returns: torch's OpenMP workers (libgomp) spin
# about 300000 pauses, ~4 ms on the reference machine, before they sleep (gradfuse's own workers
# spin well under 1 ms). See quiesce().
QUIESCE_S = 20e-3


def quiesce(device: str) -> None:
    """Let the previous sample's threads go idle before the next sample starts.

    Samples are interleaved across providers, so without a pause each sample would begin while
    the previous provider's threads still spin: on a machine with few cores, a torch sample
    following a torch sample finds its own OpenMP workers already awake (a head start), while a
    gradfuse sample following a torch sample shares a core with them for its first few
    milliseconds (on the 2-core reference machine gradfuse's 16M-element SGD step took 35-55%
    longer right after a torch op than after a pause; torch's own fused step did not). After
    the pause every sample starts the same way: all threads asleep, none competing.
    """
    sync(device)
    time.sleep(QUIESCE_S)


def time_sample(call: Callable[[int], None], first: int, inner: int, device: str) -> float:
    """Seconds per call over ``inner`` calls on copies ``first, first + 1, ...``."""
    if device == "cuda":
        import torch

        start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
        start.record()
        for k in range(inner):
            call(first + k)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3 / inner
    t0 = time.perf_counter()
    for k in range(inner):
        call(first + k)
    return (time.perf_counter() - t0) / inner


def inner_count(seconds_per_call: float, sample_s: float = MIN_SAMPLE_S) -> int:
    if seconds_per_call <= 0:
        return MAX_INNER
    return max(1, min(MAX_INNER, int(sample_s / seconds_per_call + 0.999)))


def peak_extra_memory(call: Callable[[int], None], device: str) -> int | None:
    """CUDA only: bytes allocated beyond what was live before one call, at its peak."""
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call(0)
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def cache_bytes(device: str, llc_bytes: int) -> int:
    """The largest cache the data could hide in: the CPU's last level, or the GPU's L2."""
    if device == "cuda":
        import torch

        l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 0)
        return l2 or 64 << 20
    return llc_bytes


class Stream:
    """The machine's in-place stream bandwidth: ``a.mul_(s)`` (one read and one write of 4-byte
    floats, 8 B/element) over a buffer 16x the last-level cache (at least 256 MiB; 4x and
    128 MiB in ``--quick``), s alternating between 1.0001 and 1/1.0001 so the values stay put.
    Uses torch's thread pool, set to the same thread count as gradfuse's.

    The bandwidth of a shared machine drifts (on the 2-core reference VM it moved between about
    40 and 80 GB/s within minutes), so the bench times this stream in every round of every
    case, beside the providers' samples, and takes each case's % of ceiling against it."""

    KERNEL = "in-place a.mul_(s), torch, float32"

    def __init__(self, device: str, llc_bytes: int, quick: bool) -> None:
        import torch

        self.device = device
        self.cache = cache_bytes(device, llc_bytes)
        factor = 4 if quick else 16
        nbytes = max(factor * self.cache, (128 if quick else 256) << 20)
        self.n = nbytes // 4
        self.buffer = torch.rand(self.n, device=device).add_(0.5)  # values in [0.5, 1.5)
        self.bytes_moved = 2 * 4 * self.n
        self._calls = 0

    def _stream(self, k: int) -> None:
        self.buffer.mul_(1.0001 if (self._calls + k) % 2 == 0 else 1.0 / 1.0001)

    def sample(self) -> float:
        """Seconds for one pass, timed right after an untimed one (its threads awake)."""
        self._stream(0)
        seconds = time_sample(self._stream, 1, 1, self.device)
        self._calls += 2
        return seconds

    def gbps(self, samples: list[float]) -> float:
        return self.bytes_moved / statistics.median(samples) / 1e9

    def summary(self, samples: list[float]) -> dict[str, Any]:
        import torch

        return {
            "device": self.device,
            "kernel": self.KERNEL,
            "bytes_per_element": 8,
            "buffer_bytes": int(4 * self.n),
            "cache_bytes": int(self.cache),
            "bytes_moved": int(self.bytes_moved),
            "samples_s": samples,
            "median_s": statistics.median(samples),
            "gbps": self.gbps(samples),
            "best_gbps": self.bytes_moved / min(samples) / 1e9,
            "threads": torch.get_num_threads(),
        }
