"""The registry itself: every gradfuse symbol it names exists, and a missing one fails the test
that needs it instead of skipping it (a rename must not turn the suite into skips)."""

from __future__ import annotations

import dataclasses

import pytest
from reliability_registry import (
    LOSSES,
    OPTIMIZERS,
    LossSpec,
    OptimSpec,
    require_class,
    require_functional,
)


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.name)
def test_every_optimizer_entry_exists(spec: OptimSpec) -> None:
    assert require_class(spec) is not None
    assert require_functional(spec) is not None


@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_every_loss_entry_exists(spec: LossSpec) -> None:
    assert spec.require_fn() is not None
    assert spec.require_with_grad() is not None


def test_a_missing_name_fails() -> None:
    renamed = dataclasses.replace(OPTIMIZERS[0], name="RenamedSGD", functional="renamed_sgd_")
    with pytest.raises(pytest.fail.Exception, match=r"gradfuse\.optim\.RenamedSGD"):
        require_class(renamed)
    with pytest.raises(pytest.fail.Exception, match=r"gradfuse\.functional\.renamed_sgd_"):
        require_functional(renamed)
    loss = dataclasses.replace(LOSSES[0], name="renamed_loss")
    with pytest.raises(pytest.fail.Exception, match=r"gradfuse\.nn\.functional\.renamed_loss"):
        loss.require_fn()
    with pytest.raises(pytest.fail.Exception, match="renamed_loss_with_grad"):
        loss.require_with_grad()
