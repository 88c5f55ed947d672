"""gradfuse: fused analytic loss gradients and fused optimizer updates, CPU and CUDA.

    import gradfuse
    opt = gradfuse.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)   # for torch.optim.SGD

The low-level in-place layer is :mod:`gradfuse.functional`; `gradfuse info` prints the build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradfuse._clip import clip_grad_norm_, grad_norms
from gradfuse._config import (
    cuda_available,
    cuda_compiled,
    get_num_threads,
    set_num_threads,
    show_config,
)
from gradfuse._version import __version__

if TYPE_CHECKING:
    from gradfuse import functional, optim

__all__ = [
    "__version__",
    "clip_grad_norm_",
    "cuda_available",
    "cuda_compiled",
    "functional",
    "get_num_threads",
    "grad_norms",
    "optim",
    "set_num_threads",
    "show_config",
]


def __getattr__(name: str) -> Any:
    # Submodules load on first use: `import gradfuse` must not import torch.
    if name in {"optim", "functional", "nn"}:
        import importlib

        return importlib.import_module(f"gradfuse.{name}")
    raise AttributeError(f"module 'gradfuse' has no attribute {name!r}")
