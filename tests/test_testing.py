"""gradfuse.testing: the reference optimizers the tests, `gradfuse check` and `gradfuse bench`
compare against."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch

import gradfuse
import gradfuse.testing
from gradfuse.testing import (
    REFERENCES,
    Lion,
    has_torch_class,
    reference_class,
    reference_optimizer,
)
from optim_testing import EXTENSIONS
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


KW = inspect.Parameter.KEYWORD_ONLY
# The optimizers whose reference is written in gradfuse.testing, the peer class each is a
# drop-in for, and the keyword-only arguments gradfuse adds before its extensions (its defaults
# written out here).
PEERS: dict[str, tuple[str, str, list[tuple[str, Any, Any]]]] = {
    "ScheduleFreeAdamW": ("schedulefree", "AdamWScheduleFree", [("maximize", KW, False)]),
    "ScheduleFreeSGD": ("schedulefree", "SGDScheduleFree", [("maximize", KW, False)]),
    "ADOPT": ("pytorch_optimizer", "ADOPT", []),
    "AdEMAMix": ("bitsandbytes.optim", "AdEMAMix", [("maximize", KW, False)]),
    "Muon": (
        "torch.optim",
        "Muon",
        [
            ("ns_dtype", KW, torch.bfloat16),
            ("adamw_betas", KW, (0.9, 0.999)),
            ("adamw_eps", KW, 1e-8),
        ],
    ),
}


def _shape(cls: type) -> list[tuple[str, Any, Any]]:
    """A constructor's arguments: name, kind, default (a callable by its values at steps 1-1000,
    as ADOPT's clip_lambda)."""

    def value(default: Any) -> Any:
        if callable(default) and not isinstance(default, type):
            return [default(step) for step in range(1, 1001)]
        return default

    return [(p.name, p.kind, value(p.default)) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_constructor_is_the_peer_packages(name: str) -> None:
    """gradfuse's class takes the peer's arguments, in order, with the peer's defaults; the
    reference here takes gradfuse's (gradfuse.testing derives them), so this is their check."""
    module, peer, own = PEERS[name]
    theirs = _shape(getattr(pytest.importorskip(module), peer))
    ours = _shape(getattr(gradfuse.optim, name))
    var_kw = [p for p in theirs if p[1] is inspect.Parameter.VAR_KEYWORD]
    positional = [p for p in theirs if p not in var_kw]
    assert ours == [*positional, *own, *EXTENSIONS, *var_kw]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_reference_takes_gradfuses_arguments(name: str) -> None:
    ref = getattr(gradfuse.testing, name)([torch.randn(4, 4, dtype=torch.float64)], lr=0.5)
    ours = getattr(gradfuse.optim, name)([torch.randn(4, 4)], lr=0.5)
    own = {"ns_dtype": None} if name == "Muon" else {}  # Muon's reference: the params' dtype
    shared = set(ref.defaults) & set(ours.defaults)
    assert shared >= {"lr", "weight_decay"}
    assert {k: ref.defaults[k] for k in shared} == {k: own.get(k, ours.defaults[k]) for k in shared}
    with pytest.raises(TypeError, match="max_grad_norm"):  # gradfuse's extensions: not taken
        getattr(gradfuse.testing, name)([torch.randn(4, 4, dtype=torch.float64)], max_grad_norm=1.0)


@pytest.mark.parametrize("signed", [True, False])
def test_nearest_codes_is_brute_force(signed: bool) -> None:
    """gradfuse.testing.nearest_codes (the two codes around a value) against the argmin over
    all 256 codes, on random values and on every midpoint between codes +-3 floats."""
    from gradfuse.optim import dynamic_map
    from gradfuse.testing import nearest_codes

    code = dynamic_map(signed)
    mids = (code[1:] + code[:-1]) / 2
    near = [mids]
    for direction in (2.0, -2.0):
        x = mids
        for _ in range(3):
            x = torch.nextafter(x, torch.tensor(direction))
            near.append(x)
    g = torch.Generator().manual_seed(0)
    random = torch.rand(20_000, generator=g) * torch.pow(10.0, -7 * torch.rand(20_000, generator=g))
    xn = torch.cat([*near, random, -random, code, torch.tensor([0.0, 1.0, -1.0])])
    xn = xn if signed else xn.abs()
    brute = (xn[:, None] - code[None, :]).abs().argmin(1)  # first of equal distances: the lower
    if not signed:
        brute = torch.where((brute == 0) & (xn > 0), 1, brute)
    assert torch.equal(nearest_codes(xn, code, signed), brute)
