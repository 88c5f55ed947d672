"""torch's ``reduction`` argument of the functional losses, shared by gradfuse.nn's losses."""

from __future__ import annotations

from torch.nn import _reduction as _Reduction


def legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """``reduction`` as torch's losses take it: when the deprecated ``size_average`` or
    ``reduce`` is given, they decide it (torch's mapping, and its deprecation warning)."""
    if size_average is not None or reduce is not None:
        return str(_Reduction.legacy_get_string(size_average, reduce))
    return reduction


def check_reduction(reduction: str) -> None:
    """torch's error for an unknown reduction."""
    _Reduction.get_enum(reduction)
