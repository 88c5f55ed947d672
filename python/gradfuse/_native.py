"""Loads gradfuse._core once, with an actionable error if the build is broken.

The CPU kernels run on the OpenMP runtime (src/cpu/parallel.h): ``_core`` is linked against
``libgomp.so.1`` by soname and bundles no copy. When torch is installed, its wheel ships its own
``torch/lib/libgomp.so.1``; loading that copy before ``_core`` (without importing torch) makes
the dynamic loader hand ``_core`` the same library, so gradfuse and torch share one runtime,
one set of threads and one thread count whichever of the two is imported first. (Imported
after torch, ``_core`` finds torch's copy already loaded anyway; without torch, the system's
libgomp serves alone.)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import sys
from types import ModuleType


def torch_libgomp() -> str | None:
    """The path of the libgomp that torch ships (``torch/lib/libgomp.so.1``), found without
    importing torch; None when torch is not installed or ships none (then, or when torch is
    already imported, nothing needs loading)."""
    if "torch" in sys.modules:
        return None  # torch is loaded: so is its libgomp, and _core will get that one
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "lib", "libgomp.so.1")
        if os.path.isfile(path):
            return path
    return None


def _load_torch_libgomp() -> None:
    path = torch_libgomp()
    if path is None:
        return
    # A broken torch install (OSError): _core then gets the system's libgomp.
    with contextlib.suppress(OSError):
        ctypes.CDLL(path)


@functools.cache
def core() -> ModuleType:
    _load_torch_libgomp()
    try:
        from gradfuse import _core
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise ImportError(
            "gradfuse's native module gradfuse._core could not be imported "
            f"({exc}). Reinstall gradfuse from source with `pip install .` (or `make install`) "
            "so that the extension is built for this Python."
        ) from exc
    return _core


def codes(kind: str) -> dict[str, int]:
    """The native interface's integer codes of one kind (``"dtype"``, ``"weight_decay_mode"``,
    ``"param_policy"``, ``"norm_kind"``, ``"step_fields"``) by name, as ``_core`` defines them:
    Python restates none of them."""
    return dict(core().CODES[kind])
