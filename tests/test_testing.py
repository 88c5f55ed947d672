"""gradfuse.testing: the reference optimizers the tests, `gradfuse check` and `gradfuse bench`
compare against."""

from __future__ import annotations

import pytest
import torch

from gradfuse.testing import (
    REFERENCES,
    Lion,
    has_torch_class,
    reference_class,
    reference_optimizer,
)
from tolerances import STEP, assert_close


def test_torch_classes_where_torch_has_one() -> None:
    for name in ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "NAdam", "RAdam"):
        assert reference_class(name) is getattr(torch.optim, name)
        assert has_torch_class(name)
    assert reference_class("Lion") is Lion
    assert REFERENCES["Lion"] is Lion
    assert not has_torch_class("Lion")


def test_unknown_name_is_an_error_naming_both_places() -> None:
    with pytest.raises(KeyError, match=r"neither gradfuse\.testing\.REFERENCES"):
        reference_class("Sophia")


def test_reference_optimizer_is_the_for_loop_path() -> None:
    p = torch.randn(5, requires_grad=True)
    opt = reference_optimizer("Adam", [p], lr=1e-3)
    assert opt.param_groups[0]["foreach"] is False
    lion = reference_optimizer("Lion", [p], lr=1e-3, weight_decay=0.1)
    assert isinstance(lion, Lion)
    assert lion.param_groups[0]["foreach"] is False


@pytest.mark.parametrize("foreach", [False, True])
def test_lion_follows_the_paper_with_a_tensor_lr(foreach: bool) -> None:
    p0, g = torch.randn(257, dtype=torch.float64), torch.randn(257, dtype=torch.float64)
    lr, wd, b1, b2 = 1e-2, 0.1, 0.9, 0.99
    p = p0.clone().requires_grad_(True)
    p.grad = g.clone()
    opt = Lion(
        [p],
        lr=torch.tensor(lr, dtype=torch.float64),
        betas=(b1, b2),
        weight_decay=wd,
        foreach=foreach,
    )
    opt.step()
    opt.step()
    # By hand: m0 = 0; step 1 moves by sign((1-b1) g), m1 = (1-b2) g; step 2 by
    # sign(b1 m1 + (1-b1) g); m2 = b2 m1 + (1-b2) g.
    p1 = p0 * (1 - lr * wd) - lr * torch.sign((1 - b1) * g)
    m1 = (1 - b2) * g
    p2 = p1 * (1 - lr * wd) - lr * torch.sign(b1 * m1 + (1 - b1) * g)
    assert_close(p.detach(), p2, STEP[torch.float64], "param")
    assert_close(opt.state[p]["exp_avg"], b2 * m1 + (1 - b2) * g, STEP[torch.float64], "exp_avg")
