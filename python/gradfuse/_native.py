"""Loads gradfuse._core once, with an actionable error if the build is broken."""

from __future__ import annotations

import functools
from types import ModuleType


@functools.cache
def core() -> ModuleType:
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
