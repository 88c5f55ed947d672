"""gradfuse's optimizers in timm's optimizer factory.

::

    import gradfuse.integrations.timm
    from timm.optim import create_optimizer_v2

    gradfuse.integrations.timm.register()
    opt = create_optimizer_v2(model, opt="gfadamw", lr=1e-3, weight_decay=0.05)

Every optimizer class of :mod:`gradfuse.optim` is registered as ``"gf" + class name in lower
case`` (``gfsgd``, ``gfadamw``, ``gfadamw8bit``, ``gfmuon``, ``gfademamix``,
``gfschedulefreeadamw``, ...). Its timm settings (the ``OptimInfo`` flags that say which of
timm's ``eps`` / ``betas`` / ``momentum`` arguments it is passed, and the ``defaults``):

- a name timm has (``sgd``, ``adamw``, ``rmsprop``, ``lion``, ``lamb``, ``muon``, ...): timm's
  entry for it (``gfsgd`` has Nesterov momentum as timm's ``sgd``, ``gfrmsprop`` alpha 0.9 as
  timm's ``rmsprop``, ...), so swapping ``"adamw"`` for ``"gfadamw"`` changes the implementation
  only;
- an 8-bit class (``gfadamw8bit``, ``gfsgd8bit``, ...): the settings of its 32-bit class (timm's
  ``adamw``, ``sgd``, ... entry, as timm's own ``bnbsgd8bit`` copies ``sgd``'s), so adding
  ``8bit`` changes the state's precision only;
- a name timm 1.0.31 lacks (``gfademamix``, ``gfademamix8bit``, ``gfschedulefreeadamw``,
  ``gfschedulefreesgd``): the flags read from the class's signature, no ``defaults`` (the
  class's own); call ``optimizer.train()`` before training with a schedule-free one.

A flag is set only where the gradfuse class takes that argument as timm passes it: timm's
``adafactor`` is its own class, with ``betas`` and a float ``eps``; gradfuse's is torch's, with
neither, so ``gfadafactor`` drops them as timm drops any argument an optimizer lacks.

``gfmuon`` / ``gfmuon8bit``: timm's Muon sends biases, norms and other params of fewer than 2
dimensions to its AdamW fallback by itself, and timm's weight-decay grouping puts them in a
group of their own; gradfuse's :class:`~gradfuse.optim.Muon` takes them only in a group with
``use_muon=False``. So these names create the optimizer from timm's groups split the same way:
params of 2 or more dimensions in ``use_muon=True`` groups, the others (and every group timm
marks ``use_fallback=True``: ``fallback_list`` / ``fallback_no_weight_decay``) in
``use_muon=False`` (AdamW) groups, each keeping its group's ``lr`` / ``weight_decay``. A group
that already sets ``use_muon`` (``param_group_fn=gradfuse.optim.muon_param_groups``) is kept
as it is. timm's ``betas`` are the AdamW groups' (``adamw_betas``); ``eps`` is Muon's
Newton-Schulz one, as in :class:`torch.optim.Muon` (the AdamW groups' is ``adamw_eps``);
``momentum`` is 0.9 unless given (timm's default for every optimizer with momentum, its own
Muon's too; gradfuse's is 0.95). Unlike timm's Muon, params of 2 or more dimensions all go to
Muon whatever their shape (timm's also sends, e.g., ``(1, n, d)`` position embeddings to
AdamW): name them in ``fallback_list`` to do the same.

No underscore in a name: timm reads only the last ``_``-separated part (``lookahead_gfadamw``
wraps ``gfadamw`` in Lookahead).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from gradfuse.optim import Muon

__all__ = ["PREFIX", "register"]

PREFIX = "gf"
_EIGHT_BIT = "8bit"


def register() -> list[str]:
    """Add every gradfuse optimizer to timm's default registry (idempotent: an entry already
    registered as it would be is left alone); returns the names, in the order of
    ``gradfuse.optim.__all__`` (its classes)."""
    from timm.optim._optim_factory import default_registry

    import gradfuse.optim

    names = []
    for class_name in gradfuse.optim.__all__:
        cls = getattr(gradfuse.optim, class_name)
        if not isinstance(cls, type) or cls is gradfuse.optim.FusedOptimizer:
            continue  # a helper (muon_param_groups) or the base class, not an optimizer
        info = _optim_info(cls)
        try:
            registered = default_registry.get_optimizer_info(info.name)
        except ValueError:  # not registered yet
            registered = None
        if registered != info:  # timm logs a warning for each re-registration
            default_registry.register(info)
        names.append(info.name)
    return names


def _optim_info(cls: type) -> Any:
    """timm's ``OptimInfo`` for a gradfuse optimizer class (see the module docstring)."""
    from timm.optim import OptimInfo

    from gradfuse.optim import Muon

    base = cls.__name__.lower()
    is_muon = issubclass(cls, Muon)
    # What the class takes, as timm passes it: a float eps (not Adafactor's (eps1, eps2)); betas
    # (Muon: the AdamW groups' adamw_betas, which _timm_muon passes betas on to); momentum.
    params = inspect.signature(cls).parameters
    eps = params.get("eps")
    takes_eps = eps is not None and isinstance(eps.default, float)
    betas = params.get("adamw_betas" if is_muon else "betas")
    takes_betas = betas is not None
    num_betas = len(betas.default) if betas is not None and isinstance(betas.default, tuple) else 2
    takes_momentum = "momentum" in params
    opt_class: Any = _timm_muon(cls) if is_muon else cls

    found = _timm_entry(base)
    if found is None:
        return OptimInfo(
            name=PREFIX + base,
            opt_class=opt_class,
            description=f"gradfuse.optim.{cls.__name__}, fused (not in timm: its own defaults)",
            has_eps=takes_eps,
            has_momentum=takes_momentum,
            has_betas=takes_betas,
            num_betas=num_betas,
        )
    # timm's settings, less an argument the class does not take (timm's entry may describe
    # another class of that name: its adafactor takes betas, torch's and gradfuse's do not).
    timm_name, entry = found
    defaults = {k: v for k, v in (entry.defaults or {}).items() if k in params}
    return OptimInfo(
        name=PREFIX + base,
        opt_class=opt_class,
        description=f"gradfuse.optim.{cls.__name__}, fused (timm's {timm_name!r} settings)",
        has_eps=entry.has_eps and takes_eps,
        has_momentum=entry.has_momentum and takes_momentum,
        has_betas=entry.has_betas and takes_betas,
        num_betas=num_betas,
        second_order=entry.second_order,
        defaults=defaults or None,
    )


def _timm_entry(base: str) -> tuple[str, Any] | None:
    """timm's name and ``OptimInfo`` for ``base`` or, for an 8-bit class, its 32-bit class."""
    from timm.optim._optim_factory import default_registry

    for name in (base, base.removesuffix(_EIGHT_BIT)):
        try:
            return name, default_registry.get_optimizer_info(name)
        except ValueError:  # timm has no optimizer of that name
            continue
    return None


@functools.cache  # one factory per class, so that register() finds its entry unchanged
def _timm_muon(cls: type[Muon]) -> Callable[..., Muon]:
    """What timm's factory calls for ``gfmuon`` / ``gfmuon8bit``: ``cls`` over timm's groups
    split as the module docstring says, timm's ``betas`` passed as ``adamw_betas``."""

    def create(params: Iterable[Any], *, betas: Any = None, **kwargs: Any) -> Muon:
        if betas is not None:
            if "adamw_betas" in kwargs:
                raise TypeError(f"{cls.__name__}: pass betas or adamw_betas, not both")
            kwargs["adamw_betas"] = tuple(betas)
        return cls(_muon_groups(params), **kwargs)

    create.__name__ = create.__qualname__ = cls.__name__
    create.__doc__ = f":class:`gradfuse.optim.{cls.__name__}` from timm's param groups"
    return create


def _muon_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    """timm's param groups (or a plain iterable of params) as :class:`~gradfuse.optim.Muon`
    groups: in each group without ``use_muon``, params of 2 or more dimensions with
    ``use_muon=True`` and the rest with ``use_muon=False`` (AdamW), the group's other keys kept;
    a group with timm's ``use_fallback=True`` all AdamW. A split's empty half is left out."""
    from torch import Tensor

    items = list(params)
    groups = items if any(isinstance(g, dict) for g in items) else [{"params": items}]
    out: list[dict[str, Any]] = []
    for given in groups:
        group = dict(given)
        ps = group.pop("params")
        ps = [ps] if isinstance(ps, Tensor) else list(ps)
        if group.pop("use_fallback", False):
            out.append({**group, "params": ps, "use_muon": False})
        elif "use_muon" in group:  # the caller's split (e.g. gradfuse.optim.muon_param_groups)
            out.append({**group, "params": ps})
        else:
            hidden = [p for p in ps if _tensor(p).ndim >= 2]
            rest = [p for p in ps if _tensor(p).ndim < 2]
            out += [{**group, "params": hidden, "use_muon": True}] if hidden else []
            out += [{**group, "params": rest, "use_muon": False}] if rest else []
    return out


def _tensor(p: Any) -> Tensor:
    """The tensor of a param entry: a tensor, or torch's named form ``(name, tensor)``."""
    return p[1] if isinstance(p, tuple) else p  # type: ignore[no-any-return]
