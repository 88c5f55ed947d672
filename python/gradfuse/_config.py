"""Build and runtime facts. Nothing here raises or imports torch."""

from __future__ import annotations

import functools
import os
import platform
import sys
from typing import Any

from gradfuse._native import core
from gradfuse._version import __version__


def cuda_compiled() -> bool:
    """Whether this build of gradfuse contains CUDA kernels."""
    return bool(core().build_info()["cuda_compiled"])


@functools.cache
def cuda_available() -> bool:
    """CUDA kernels compiled in and at least one GPU visible. Never raises, never imports torch."""
    try:
        return cuda_compiled() and int(core().cuda_device_count()) > 0
    except Exception:  # noqa: BLE001 - never raise, whatever the driver does
        return False


def get_num_threads() -> int:
    """Threads the CPU kernels use.

    The kernels run on the OpenMP runtime, torch's own when torch is installed. By default they
    follow its thread count, as seen from the calling thread: what ``torch.set_num_threads`` set
    (without torch: ``OMP_NUM_THREADS``, else the CPUs available). A count given to
    :func:`set_num_threads` or ``GRADFUSE_NUM_THREADS`` takes precedence. 1 in a process forked
    from a multi-threaded parent (GNU OpenMP cannot restart its threads there).
    """
    return int(core().get_num_threads())


def set_num_threads(n: int) -> None:
    """Fix the threads the CPU kernels use (also settable with GRADFUSE_NUM_THREADS).

    Each parallel region then asks the OpenMP runtime for ``n`` threads, whatever
    ``torch.set_num_threads`` says; torch's own count is left alone. Results do not depend on it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    core().set_num_threads(n)


def config() -> dict[str, Any]:
    """Every fact `gradfuse info` prints, as a dict."""
    c = core()
    info: dict[str, Any] = dict(c.build_info())
    info["python"] = sys.version.split()[0]
    info["platform"] = platform.platform()
    info["cpu_isa"] = c.cpu_isa()
    info["cpu_isas_available"] = c.cpu_isas()
    info["threads"] = int(c.get_num_threads())
    info["cpus_available"] = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    n = int(c.cuda_device_count()) if info["cuda_compiled"] else 0
    info["cuda_driver_version"] = int(c.cuda_driver_version()) if info["cuda_compiled"] else 0
    info["gpus"] = [str(c.cuda_device_description(i)) for i in range(n)]
    torch = sys.modules.get("torch")
    info["torch"] = getattr(torch, "__version__", None) if torch is not None else _torch_version()
    return info


def _torch_version() -> str | None:
    """torch's version from its metadata, without importing it."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("torch")
        except PackageNotFoundError:
            return None
    except Exception:  # noqa: BLE001 - metadata lookups must never raise
        return None


def show_config() -> None:
    """Print version, ISA in use, threads, CUDA build facts and the GPUs seen."""
    info = config()
    gpus = info["gpus"]
    rows = [
        ("gradfuse", __version__),
        ("python", f"{info['python']} ({info['platform']})"),
        ("torch", info["torch"] or "not installed"),
        ("compiler", f"{info['cxx_compiler']} ({info['build_type']})"),
        ("cpu isa in use", info["cpu_isa"]),
        (
            "cpu isas",
            f"available {info['cpu_isas_available']}; compiled {info['cpu_isas_compiled']}",
        ),
        ("cpu threads", f"{info['threads']} (of {info['cpus_available']} available)"),
        ("cuda compiled", "yes" if info["cuda_compiled"] else "no"),
    ]
    if info["cuda_compiled"]:
        drv = info["cuda_driver_version"]
        rows += [
            ("cuda version", info["cuda_version"]),
            ("cuda archs", info["cuda_archs"]),
            ("cuda driver", f"{drv // 1000}.{drv % 1000 // 10}" if drv else "none found"),
        ]
    rows.append(("gpus", ", ".join(gpus) if gpus else "none"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
