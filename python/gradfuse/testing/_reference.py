"""The base of the float64 reference optimizers: torch's ``step(closure)`` around the update,
and the constructor arguments of the gradfuse class a reference is written for."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from gradfuse._options import option_names
from gradfuse.optim._optimizer import OptimizerOptions


def arguments_of(
    cls: type,
    *,
    omit: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> inspect.Signature:
    """The constructor of ``gradfuse.optim.<cls>`` as a reference takes it: torch's (or the peer
    package's) arguments, in their order, with their defaults, but gradfuse's keyword-only
    extensions (:class:`~gradfuse.optim.OptimizerOptions`; LAMB's positional ``max_grad_norm``
    is apex's own argument and stays), a ``**kwargs`` and ``omit``; ``defaults`` replace some
    defaults, ``extra`` (name: default) are keyword-only arguments of the reference's own, last.

    The defaults are gradfuse's: tests compare them with the peer package's signature
    (tests/test_testing.py), so that check stays independent of the reference."""
    extensions = set(option_names(OptimizerOptions))
    new = dict(defaults or {})
    own = [
        # a replaced default: the class's annotation may not allow it (Muon's ns_dtype=None)
        p.replace(default=new.pop(p.name), annotation=p.empty) if p.name in new else p
        for p in inspect.signature(cls).parameters.values()
        if p.name not in omit
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and not (p.kind is inspect.Parameter.KEYWORD_ONLY and p.name in extensions)
    ]
    assert not new, f"{cls.__name__} has no arguments {sorted(new)}"
    kw = inspect.Parameter.KEYWORD_ONLY
    own += [inspect.Parameter(name, kw, default=v) for name, v in (extra or {}).items()]
    return inspect.Signature(own)


class ReferenceOptimizer(torch.optim.Optimizer):
    """A reference optimizer: ``step`` evaluates the closure (with grad enabled), then runs
    :meth:`_update` (the algorithm, written out plainly in float64) without grad.

    A reference for a gradfuse optimizer takes its constructor arguments: the class sets
    ``__signature__ = arguments_of(...)`` and its ``__init__`` binds them (:meth:`_bind`)."""

    __signature__: ClassVar[inspect.Signature]

    def _bind(self, params: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments but ``params``, bound to :attr:`__signature__` (its
        defaults filled in), as torch's ``defaults`` of a param group."""
        bound = type(self).__signature__.bind(params, *args, **kwargs)
        bound.apply_defaults()
        return {name: v for name, v in bound.arguments.items() if name != "params"}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._update()
        return loss

    def _update(self) -> None:
        raise NotImplementedError
