"""Lightning: ``configure_optimizers`` returning a gradfuse optimizer and scheduler,
``Trainer.fit`` with ``gradient_clip_val``, and resuming from a Lightning checkpoint, against
the same module with torch's AdamW."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

import gradfuse
from tolerances import TRAINING_CURVE, assert_close

STEPS = 8

# Lightning 2.6.6's own use of torch's pytree (torch 2.13 deprecates LeafSpec instances); not
# about the optimizer, and an error under this suite's filterwarnings.
pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`:FutureWarning")


class Regressor(pl.LightningModule):
    def __init__(self, opt_cls: type[torch.optim.Optimizer]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
        self.opt_cls = opt_cls
        self.losses: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> Any:
        opt = self.opt_cls(self.parameters(), lr=1e-2, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _loader() -> torch.utils.data.DataLoader[Any]:
    """Half of STEPS batches: two epochs make a run, and the half-way checkpoint falls on an
    epoch's end (a loader without state cannot resume mid-epoch)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8 * (STEPS // 2), 16, generator=gen)
    y = x @ torch.randn(16, 4, generator=gen) / 4  # a target the network can learn
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)


def _trainer(max_steps: int, root: Path) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=0.5,
        gradient_clip_algorithm="norm",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
    )


def _fit(
    opt_cls: type[torch.optim.Optimizer], max_steps: int, root: Path, ckpt: Path | None = None
) -> tuple[Any, Any]:
    module = Regressor(opt_cls)
    trainer = _trainer(max_steps, root)
    with warnings.catch_warnings():
        # Lightning's advice for a real run (num_workers, ...), not about the optimizer.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, _loader(), ckpt_path=None if ckpt is None else str(ckpt))
    return module, trainer


def test_fit_with_clipping_matches_torch(tmp_path: Path) -> None:
    ours, trainer = _fit(gradfuse.optim.AdamW, STEPS, tmp_path)
    theirs, _ = _fit(torch.optim.AdamW, STEPS, tmp_path)
    assert isinstance(trainer.optimizers[0], gradfuse.optim.AdamW)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == STEPS  # stepped every step
    assert len(ours.losses) == STEPS
    assert ours.losses[-1] < ours.losses[0]
    a = torch.tensor(ours.losses, dtype=torch.float64)
    b = torch.tensor(theirs.losses, dtype=torch.float64)
    assert_close(a, b, TRAINING_CURVE, "per-step loss, gradfuse vs torch AdamW")
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, "weights after fit")


def _fit_in_two_halves(opt_cls: type[torch.optim.Optimizer], root: Path) -> tuple[Any, Any]:
    first, trainer = _fit(opt_cls, STEPS // 2, root)
    ckpt = root / f"half-{opt_cls.__module__}.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed, trainer = _fit(opt_cls, STEPS, root, ckpt)
    resumed.losses[:0] = first.losses
    return resumed, trainer


def test_resume_from_lightning_checkpoint(tmp_path: Path) -> None:
    """Fit half, save a checkpoint, fit on from it: the same run as torch's AdamW through the
    same steps. (Not the same as one uninterrupted fit, with torch's AdamW either: measured,
    the losses part after the first resumed step in Lightning 2.6.6.)"""
    ours, trainer = _fit_in_two_halves(gradfuse.optim.AdamW, tmp_path)
    theirs, _ = _fit_in_two_halves(torch.optim.AdamW, tmp_path)
    opt = trainer.optimizers[0]
    assert isinstance(opt, gradfuse.optim.AdamW)
    assert all(int(s["step"]) == STEPS for s in opt.state.values())  # the state came back
    assert len(ours.losses) == STEPS
    got = torch.tensor(ours.losses, dtype=torch.float64)
    want = torch.tensor(theirs.losses, dtype=torch.float64)
    assert_close(got, want, TRAINING_CURVE, "losses: resumed gradfuse vs resumed torch")
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, "weights after the resumed fit")
