"""gradfuse.optim.Lion against a torch implementation of the published algorithm.

torch has no Lion; the torch providers run :class:`gradfuse.testing.Lion` (Chen et al. 2023,
"Symbolic Discovery of Optimization Algorithms", Algorithm 2), a for-loop over tensors or the
same update with torch's ``_foreach`` ops. It is also the reference ``gradfuse check`` and the
tests use.

    update = sign(beta1 * m + (1 - beta1) * g)
    p      = p * (1 - lr * weight_decay) - lr * update
    m      = beta2 * m + (1 - beta2) * g
"""

from __future__ import annotations

from typing import Any

from gradfuse.bench._case import optimizer_cases


def _torch_lion(params: Any, *, foreach: bool = False, **kwargs: Any) -> Any:
    from gradfuse.testing import reference_optimizer

    return reference_optimizer("Lion", params, foreach=foreach, **kwargs)


CASES = optimizer_cases(
    [("lion", "lion", "Lion", {"lr": 1e-4, "weight_decay": 1e-2},
      ({}, {"weight_decay": 0.0}, {"betas": (0.95, 0.98), "maximize": True}))],
    _torch_lion,
    "the published algorithm in torch ops",
)  # fmt: skip
