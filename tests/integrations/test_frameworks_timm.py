"""timm: ``gradfuse.integrations.timm.register()`` puts every gradfuse optimizer in timm's
factory as "gf" + its lower-case name, with the settings of timm's entry for the same name (an
8-bit class: its 32-bit class's), so that ``create_optimizer_v2(model, opt="gfadamw")`` trains
as ``opt="adamw"`` does, and every name creates its optimizer from timm's param groups.

timm imports torchvision unconditionally, and torchvision's wheels on PyPI are CUDA builds that
do not load next to the CPU torch of the test environment, so `make test` installs timm with
``--no-deps`` (the Makefile's TIMM_SPEC) and, where the real torchvision does not import, the
``timm_optim`` fixture imports timm over a stand-in (tests/integrations/_torchvision_stub.py)
for the duration of this module. Where timm is not installed at all, the module skips.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # timm's model factory must not reach the Hub

import _torchvision_stub
import pytest
import torch
from torch import nn

import gradfuse
import gradfuse.integrations.timm as gf_timm
from tolerances import TRAINING_CURVE, assert_close

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed (`make test` installs it: the Makefile's TIMM_SPEC)",
)

CLASSES = [
    n
    for n in gradfuse.optim.__all__
    if isinstance(getattr(gradfuse.optim, n), type) and n != "FusedOptimizer"
]
# The classes whose timm settings are not simply timm's entry for their name (or, 8-bit, their
# 32-bit class's name): timm's adafactor is timm's own class (betas, a float eps); gradfuse's
# is torch's, with neither. The rest have no timm entry: flags from their signatures.
OWN_FLAGS: dict[str, dict[str, Any]] = {
    "Adafactor": {"has_eps": False, "has_momentum": False, "has_betas": False},
    "AdEMAMix": {"has_eps": True, "has_momentum": False, "has_betas": True, "num_betas": 3},
    "AdEMAMix8bit": {"has_eps": True, "has_momentum": False, "has_betas": True, "num_betas": 3},
    "ScheduleFreeAdamW": {"has_eps": True, "has_momentum": False, "has_betas": True},
    "ScheduleFreeSGD": {"has_eps": False, "has_momentum": True, "has_betas": False},
}
NOT_IN_TIMM = {"AdEMAMix", "AdEMAMix8bit", "ScheduleFreeAdamW", "ScheduleFreeSGD"}


def _drop_modules(*packages: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]


def _torchvision_imports() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        # Not installed, or a CUDA build beside the CPU torch: "operator torchvision::nms does
        # not exist" (RuntimeError), or its CUDA libraries missing (OSError).
        return False
    return True


@pytest.fixture(scope="module")
def timm_optim() -> Iterator[ModuleType]:
    """``timm.optim``, over the real torchvision where it imports, else over the stub."""
    if _torchvision_imports():
        yield importlib.import_module("timm.optim")
        return
    # What a failed import left behind (a partly imported torchvision, or timm's submodules
    # from test_frameworks_docs' probe) must not mix with the modules imported over the stub.
    _drop_modules("torchvision", "timm")
    _torchvision_stub.install()
    try:
        yield importlib.import_module("timm.optim")
    finally:
        # Later tests in this process see the environment as it is: without torchvision, timm
        # does not import (test_frameworks_docs then skips the README's timm snippet, which
        # runs in a subprocess that has no stub).
        _drop_modules("torchvision", "timm")


def test_register_names_every_optimizer(
    timm_optim: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    names = gf_timm.register()
    assert names == ["gf" + n.lower() for n in CLASSES]
    with caplog.at_level(logging.WARNING):
        assert gf_timm.register() == names  # idempotent, without timm's overwrite warnings
    assert not [r for r in caplog.records if "already registered" in r.getMessage()]
    listed = set(timm_optim.list_optimizers())
    for name in names:
        assert name in listed


@pytest.mark.parametrize("cls_name", CLASSES)
def test_settings(timm_optim: ModuleType, cls_name: str) -> None:
    gf_timm.register()
    info = timm_optim.get_optimizer_info("gf" + cls_name.lower())
    flags = ("has_eps", "has_momentum", "has_betas", "num_betas")
    got = {k: getattr(info, k) for k in flags}
    if cls_name in NOT_IN_TIMM:
        assert got == {"num_betas": 2, **OWN_FLAGS[cls_name]}
        assert info.defaults is None  # the class's own defaults
        return
    base = cls_name.lower().removesuffix("8bit")
    theirs = timm_optim.get_optimizer_info(base)
    assert got == {**{k: getattr(theirs, k) for k in flags}, **OWN_FLAGS.get(cls_name, {})}
    assert info.defaults == theirs.defaults  # gfsgd8bit: Nesterov, as sgd; gfrmsprop: alpha 0.9


def _model() -> nn.Module:
    torch.manual_seed(0)
    # Biases and the LayerNorm are the 1-D params timm puts in a weight-decay-free group.
    return nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))


def _train(opt: Any, model: nn.Module, steps: int = 8) -> list[float]:
    if hasattr(opt, "train"):
        opt.train()  # schedule-free
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("cls_name", CLASSES)
def test_every_name_creates_and_trains(timm_optim: ModuleType, cls_name: str) -> None:
    gf_timm.register()
    name = "gf" + cls_name.lower()
    info = timm_optim.get_optimizer_info(name)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    # eps and betas as timm's train.py passes --opt-eps / --opt-betas: timm drops them where the
    # flags say the class lacks them, so a flag set for a class without them fails here.
    betas = (0.9, 0.99, 0.999)[: info.num_betas]
    opt = timm_optim.create_optimizer_v2(
        model, opt=name, lr=1e-3, weight_decay=0.05, eps=1e-8, betas=betas
    )
    assert type(opt) is getattr(gradfuse.optim, cls_name)
    losses = _train(opt, model, steps=3)
    assert all(torch.isfinite(torch.tensor(losses)))
    for p, q in zip(model.parameters(), before, strict=True):
        assert not torch.equal(p.detach(), q)  # every param trained, the 1-D ones too


def _muon_split(opt: Any) -> list[tuple[bool, list[int], float]]:
    return [
        (g["use_muon"], [p.ndim for p in g["params"]], g["weight_decay"]) for g in opt.param_groups
    ]


@pytest.mark.parametrize("cls_name", ["Muon", "Muon8bit"])
def test_muon_one_dim_params_go_to_adamw(timm_optim: ModuleType, cls_name: str) -> None:
    gf_timm.register()
    name = "gf" + cls_name.lower()
    model = _model()
    opt = timm_optim.create_optimizer_v2(
        model, opt=name, lr=1e-2, weight_decay=0.05, betas=(0.8, 0.9)
    )
    # timm's groups (1-D params without weight decay, the rest with), each split by rank.
    assert _muon_split(opt) == [(False, [1, 1, 1, 1], 0.0), (True, [2, 2], 0.05)]
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)  # timm's betas: the AdamW groups'
    cls = getattr(gradfuse.optim, cls_name)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        cls([model[0].bias], lr=1e-2)  # what timm's 1-D group would get from the class itself
    ref_model = _model()
    r1, rnorm, _, r2 = ref_model
    ref = cls(
        [
            {
                "params": [r1.bias, rnorm.weight, rnorm.bias, r2.bias],
                "weight_decay": 0.0,
                "use_muon": False,
            },
            {"params": [r1.weight, r2.weight], "weight_decay": 0.05, "use_muon": True},
        ],
        lr=1e-2,
        momentum=0.9,  # timm's default momentum, as for its own muon
        adamw_betas=(0.8, 0.9),
    )
    ours, theirs = _train(opt, model), _train(ref, ref_model)
    assert ours == theirs
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_muon_fallback_groups_and_own_split(timm_optim: ModuleType) -> None:
    gf_timm.register()
    model = _model()
    # timm's fallback_list marks the head's weight for the AdamW fallback (use_fallback=True).
    opt = timm_optim.create_optimizer_v2(
        model, opt="gfmuon", lr=1e-2, weight_decay=0.05, fallback_list=["3.weight"]
    )
    assert _muon_split(opt) == [(False, [1, 1, 1, 1], 0.0), (True, [2], 0.05), (False, [2], 0.05)]
    assert opt.param_groups[2]["params"][0] is model[3].weight
    assert "use_fallback" not in opt.param_groups[2]
    # gradfuse's own split (groups that set use_muon) is kept as given.
    opt = timm_optim.create_optimizer_v2(
        model, opt="gfmuon", lr=1e-2, param_group_fn=gradfuse.optim.muon_param_groups
    )
    assert [(g["use_muon"], len(g["params"])) for g in opt.param_groups] == [(True, 1), (False, 5)]
    # Params rather than a model: no weight-decay groups, the one group split.
    opt = timm_optim.create_optimizer_v2(list(model.parameters()), opt="gfmuon", lr=1e-2)
    assert [(g["use_muon"], len(g["params"])) for g in opt.param_groups] == [(True, 2), (False, 4)]
    _train(opt, model, steps=2)


@pytest.mark.parametrize("cls_name", ["SGD", "AdamW", "RMSprop", "Lion"])
def test_create_optimizer_v2_trains_like_timms_own(timm_optim: ModuleType, cls_name: str) -> None:
    gf_timm.register()
    base = cls_name.lower()
    ours_model, theirs_model = _model(), _model()
    ours = _train(
        timm_optim.create_optimizer_v2(ours_model, opt="gf" + base, lr=1e-2, weight_decay=0.05),
        ours_model,
    )
    theirs = _train(
        timm_optim.create_optimizer_v2(theirs_model, opt=base, lr=1e-2, weight_decay=0.05),
        theirs_model,
    )
    a = torch.tensor(ours, dtype=torch.float64)
    b = torch.tensor(theirs, dtype=torch.float64)
    assert_close(a, b, TRAINING_CURVE, f"gf{base} vs {base}")
    for p, q in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, f"weights, gf{base} vs {base}")


@pytest.mark.parametrize("cls_name", ["SGD8bit", "RMSprop8bit", "AdamW8bit"])
def test_eight_bit_name_has_its_32_bit_settings(timm_optim: ModuleType, cls_name: str) -> None:
    # Every param of this model is under min_8bit_size (4096 elements), so its state stays
    # float32: with the same settings (gfsgd8bit Nesterov as gfsgd, ...) the runs are the same.
    gf_timm.register()
    name = "gf" + cls_name.lower()
    ours_model, theirs_model = _model(), _model()
    kwargs: dict[str, Any] = {"lr": 1e-2, "weight_decay": 0.05}
    ours = _train(timm_optim.create_optimizer_v2(ours_model, opt=name, **kwargs), ours_model)
    theirs = _train(
        timm_optim.create_optimizer_v2(theirs_model, opt=name.removesuffix("8bit"), **kwargs),
        theirs_model,
    )
    assert ours == theirs


def test_lookahead_prefix(timm_optim: ModuleType) -> None:
    gf_timm.register()
    model = _model()
    opt = timm_optim.create_optimizer_v2(model, opt="lookahead_gfadamw", lr=1e-3)
    assert isinstance(opt, timm_optim.Lookahead)
    # timm 1.0.31 keeps the wrapped optimizer in _base_optimizer (no public accessor).
    assert type(opt._base_optimizer) is gradfuse.optim.AdamW
    losses = _train(opt, model, steps=7)  # past Lookahead's k=6 (its slow-weights sync)
    assert all(torch.isfinite(torch.tensor(losses)))
