"""``gradfuse bench`` and ``gradfuse check``: speed and correctness against torch, on this machine.

Ops are the cases in :mod:`gradfuse.bench.cases` (one module per op); see DESIGN.md §8.
"""

from __future__ import annotations

from gradfuse.bench._progress import progress, tqdm_bar
from gradfuse.bench._run import add_arguments, run

__all__ = ["add_arguments", "progress", "run", "tqdm_bar"]
