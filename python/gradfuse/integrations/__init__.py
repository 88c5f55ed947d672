"""Helpers for the frameworks people train with (README "Use it with").

gradfuse optimizers are :class:`torch.optim.Optimizer` subclasses, so Hugging Face's
``Trainer`` and ``accelerate``, Lightning and plain loops take them as they are. Two frameworks
need a helper, each in its own submodule, imported only when used (``import gradfuse`` never
imports a framework):

- :mod:`gradfuse.integrations.transformers`: :func:`~gradfuse.integrations.transformers.
  use_fused_cross_entropy` makes a causal LM (and so the ``Trainer``) compute its loss with
  gradfuse's fused cross-entropy, exactly as transformers' own ``ForCausalLMLoss`` does.
- :mod:`gradfuse.integrations.timm`: :func:`~gradfuse.integrations.timm.register` adds every
  gradfuse optimizer to timm's registry as ``"gf" + name.lower()`` (``create_optimizer_v2(model,
  opt="gfadamw")``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradfuse.integrations import timm, transformers

__all__ = ["timm", "transformers"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"gradfuse.integrations.{name}")
    raise AttributeError(f"module 'gradfuse.integrations' has no attribute {name!r}")
