"""gradfuse's optimizers in timm's optimizer factory.

::

    import gradfuse.integrations.timm
    from timm.optim import create_optimizer_v2

    gradfuse.integrations.timm.register()
    opt = create_optimizer_v2(model, opt="gfadamw", lr=1e-3, weight_decay=0.05)

Each gradfuse optimizer is registered as ``"gf" + class name in lower case`` (``gfsgd``,
``gfadam``, ``gfadamw``, ``gfadagrad``, ``gfrmsprop``, ``gfadamax``, ``gfnadam``, ``gfradam``,
``gflion``) with the settings timm uses for the name without ``gf`` (``gfsgd`` has Nesterov
momentum as timm's ``sgd``, ``gfrmsprop`` alpha 0.9 as timm's ``rmsprop``, ...): swapping
``"adamw"`` for ``"gfadamw"`` changes the implementation only. timm has no schedule-free
optimizer: ``gfschedulefreeadamw`` and ``gfschedulefreesgd`` are registered with their own
defaults (:data:`NOT_IN_TIMM`; call ``optimizer.train()`` before training). No underscore: timm reads only
the last ``_``-separated part of a name (``lookahead_gfadamw`` wraps ``gfadamw`` in Lookahead).
"""

from __future__ import annotations

import dataclasses

__all__ = ["NOT_IN_TIMM", "PREFIX", "register"]

PREFIX = "gf"
# The OptimInfo flags of the optimizers timm has no entry for (timm 1.0.31 has no schedule-free
# optimizer): which of timm's eps / momentum / betas arguments the class takes.
NOT_IN_TIMM: dict[str, dict[str, bool]] = {
    "ScheduleFreeAdamW": {"has_eps": True, "has_momentum": False, "has_betas": True},
    "ScheduleFreeSGD": {"has_eps": False, "has_momentum": True, "has_betas": False},
}


def register() -> list[str]:
    """Add every gradfuse optimizer to timm's default registry (idempotent); returns the
    names registered, in the order of ``gradfuse.optim.__all__`` (its classes)."""
    from timm.optim import OptimInfo, get_optimizer_info
    from timm.optim._optim_factory import default_registry

    import gradfuse.optim

    names = []
    for class_name in gradfuse.optim.__all__:
        cls = getattr(gradfuse.optim, class_name)
        if not isinstance(cls, type) or cls is gradfuse.optim.FusedOptimizer:
            continue  # a helper (muon_param_groups) or the base class, not an optimizer
        base = class_name.lower()
        name = PREFIX + base
        if class_name in NOT_IN_TIMM:
            info = OptimInfo(
                name=name,
                opt_class=cls,
                description=f"gradfuse.optim.{class_name}, fused (not in timm)",
                **NOT_IN_TIMM[class_name],
            )
        else:
            info = dataclasses.replace(
                get_optimizer_info(base),  # timm's entry for torch's (or timm's) class
                name=name,
                opt_class=cls,
                description=f"gradfuse.optim.{class_name}, fused (timm's {base!r} settings)",
            )
        default_registry.register(info)
        names.append(name)
    return names
