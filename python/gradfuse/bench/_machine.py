"""Facts about the machine and the software a benchmark ran on (for the table and the JSON)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

_FALLBACK_LLC = 32 << 20


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _parse_cache_size(text: str) -> int | None:
    text = text.strip().upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return int(text) if text.isdigit() else None


def last_level_cache() -> tuple[int, str]:
    """(bytes, where it came from) of CPU 0's largest-level data/unified cache."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best: tuple[int, int] | None = None
    if base.is_dir():
        for idx in sorted(base.glob("index*")):
            level = _read(idx / "level")
            kind = _read(idx / "type")
            size = _read(idx / "size")
            if not level or not size or kind == "Instruction":
                continue
            n = _parse_cache_size(size)
            if n and (best is None or int(level) > best[0]):
                best = (int(level), n)
    if best is not None:
        return best[1], f"L{best[0]} from {base}"
    return _FALLBACK_LLC, "unknown: assumed 32 MiB"


def cpu_model() -> str:
    text = _read(Path("/proc/cpuinfo")) or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_bytes() -> int | None:
    text = _read(Path("/proc/meminfo")) or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def machine(devices: list[str]) -> dict[str, Any]:
    llc, llc_src = last_level_cache()
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_bytes": memory_bytes(),
        "llc_bytes": llc,
        "llc_source": llc_src,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpus": [],
    }
    if "cuda" in devices:
        import torch

        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append(
                {
                    "name": p.name,
                    "memory_bytes": int(p.total_memory),
                    "capability": f"{p.major}.{p.minor}",
                    "l2_bytes": int(getattr(p, "L2_cache_size", 0)),
                }
            )
    return info


def versions() -> dict[str, Any]:
    import numpy
    import torch

    from gradfuse._config import config
    from gradfuse._version import __version__

    cfg = config()
    return {
        "gradfuse": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "compiler": cfg.get("cxx_compiler"),
        "build_type": cfg.get("build_type"),
        "cpu_isa": cfg.get("cpu_isa"),
        "cpu_isas_compiled": cfg.get("cpu_isas_compiled"),
        "gradfuse_threads": cfg.get("threads"),
        "torch_threads": torch.get_num_threads(),
        "cuda_compiled": cfg.get("cuda_compiled"),
        "cuda_version": cfg.get("cuda_version"),
        "torch_cuda": torch.version.cuda,
    }
