"""timm: ``gradfuse.integrations.timm.register()`` puts every gradfuse optimizer in timm's
factory as "gf" + its lower-case name, with the settings of timm's entry for the same name, so
that ``create_optimizer_v2(model, opt="gfadamw")`` trains as ``opt="adamw"`` does.

timm imports torchvision unconditionally, and torchvision's wheels on PyPI are CUDA builds whose
extension cannot load next to the CPU build of torch that CI installs (importing it then fails
with "operator torchvision::nms does not exist"), so timm is not in the test extra: these tests
run where timm imports (a CUDA torch with its torchvision) and say why they skip elsewhere.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # timm's model factory must not reach the Hub

import pytest
import torch
from torch import nn

import gradfuse
import gradfuse.integrations.timm as gf_timm
from tolerances import TRAINING_CURVE, assert_close

try:
    import timm.optim as timm_optim
except ImportError as e:  # pragma: no cover - depends on the environment
    pytest.skip(f"timm does not import here ({e})", allow_module_level=True)


def test_register_names_every_optimizer() -> None:
    names = gf_timm.register()
    classes = [n for n in gradfuse.optim.__all__ if isinstance(getattr(gradfuse.optim, n), type)]
    assert names == ["gf" + n.lower() for n in classes]
    assert gf_timm.register() == names  # idempotent
    listed = set(timm_optim.list_optimizers())
    for cls_name, name in zip(classes, names, strict=True):
        assert name in listed
        info = timm_optim.get_optimizer_info(name)
        if cls_name in gf_timm.NOT_IN_TIMM:
            flags = gf_timm.NOT_IN_TIMM[cls_name]
            assert {k: getattr(info, k) for k in flags} == flags
            continue
        base = timm_optim.get_optimizer_info(cls_name.lower())
        assert info.opt_class is getattr(gradfuse.optim, cls_name)
        assert (info.has_eps, info.has_momentum, info.has_betas, info.defaults) == (
            base.has_eps,
            base.has_momentum,
            base.has_betas,
            base.defaults,
        )


def _train(opt_name: str) -> tuple[list[float], nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
    opt = timm_optim.create_optimizer_v2(model, opt=opt_name, lr=1e-2, weight_decay=0.05)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(8):
        x, y = torch.randn(8, 16, generator=gen), torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses, model


@pytest.mark.parametrize("cls_name", ["SGD", "AdamW", "RMSprop", "Lion"])
def test_create_optimizer_v2_trains_like_timms_own(cls_name: str) -> None:
    gf_timm.register()
    base = cls_name.lower()
    ours, ours_model = _train("gf" + base)
    theirs, theirs_model = _train(base)
    a = torch.tensor(ours, dtype=torch.float64)
    b = torch.tensor(theirs, dtype=torch.float64)
    assert_close(a, b, TRAINING_CURVE, f"gf{base} vs {base}")
    for p, q in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, f"weights, gf{base} vs {base}")


def test_lookahead_prefix() -> None:
    gf_timm.register()
    model = nn.Linear(4, 4)
    opt = timm_optim.create_optimizer_v2(model, opt="lookahead_gfadamw", lr=1e-3)
    assert isinstance(opt, timm_optim.Lookahead)
    assert isinstance(opt.base_optimizer, gradfuse.optim.AdamW)
