"""Keyword options declared once and taken as ``**options``.

gradfuse's optimizers and functional updates take, besides torch's own arguments, the same
keyword-only options (``max_grad_norm`` and the precision policies; AMP's ``grad_scale`` /
``found_inf`` / ``clip_coef`` and the low-precision lists). Each set is declared once, as a
``TypedDict`` (the types, for mypy and IDEs: ``**options: Unpack[...]``, PEP 692), with its
defaults in one place beside the code that reads them. :func:`show_options` then lets
``inspect.signature`` (``help()``, torch.compile's argument layout, the tests that compare with
torch) list them as the keyword-only parameters they are, in place of ``**options``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["check_options", "option_names", "show_options"]


def options_type(fn: Callable[..., Any]) -> Any:
    """The ``TypedDict`` of ``fn``'s ``**options: Unpack[...]``."""
    annotation = fn.__annotations__["options"]
    if isinstance(annotation, str):
        annotation = eval(annotation, fn.__globals__)  # the module's own annotation
    return typing.get_args(annotation)[0]


def option_names(types: Any) -> tuple[str, ...]:
    """The keys of a ``TypedDict`` (its bases' first), in declaration order."""
    return tuple(types.__annotations__)


def show_options(fn: Callable[..., Any], defaults: Mapping[str, Any], types: Any = None) -> None:
    """Make ``inspect.signature(fn)`` list the keys of ``fn``'s ``**options: Unpack[T]`` as
    keyword-only parameters (annotated from ``T``, defaults from ``defaults``) in its place.

    ``types``: the ``TypedDict`` where ``fn`` takes the options among other keywords, in a
    ``**kwargs`` of its own: they are listed before it."""
    types = options_type(fn) if types is None else types
    options = []
    for name in option_names(types):
        annotation = types.__annotations__[name]
        if isinstance(annotation, typing.ForwardRef):
            annotation = annotation.__forward_arg__
        options.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotation
            )
        )
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD and p.name != "options"]
    fn.__signature__ = sig.replace(parameters=[*own, *options, *rest])  # type: ignore[attr-defined]


def check_options(name: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """The TypeError Python raises for an unknown keyword, for the ``**options`` of ``name``."""
    for key in options:
        if key not in allowed:
            raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
