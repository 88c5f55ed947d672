"""Hugging Face accelerate: ``Accelerator.prepare`` with a gradfuse optimizer, bfloat16 mixed
precision on the CPU, ``clip_grad_norm_`` and ``save_state`` / ``load_state``, against the same
loop with torch's AdamW (tiny Llama from a config, no download)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import frameworks_helpers as fh
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from frameworks_helpers import tiny_llama, token_rows

import gradfuse
from tolerances import AUTOCAST_BF16_CURVE, TRAINING_CURVE, assert_close

assert fh  # HF_HUB_OFFLINE is set by frameworks_helpers before transformers is imported

STEPS = 6


@pytest.fixture(autouse=True)
def _fresh_accelerator_state() -> Iterator[None]:
    # Accelerator's state is process-wide; each run here builds its own.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _run(
    cls: Callable[..., torch.optim.Optimizer],
    steps: int = STEPS,
    save_at: int | None = None,
    resume_from: Path | None = None,
    save_dir: Path | None = None,
) -> tuple[list[float], torch.nn.Module, torch.optim.Optimizer]:
    set_seed(0)
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    model = tiny_llama()
    opt = cls(model.parameters(), lr=3e-3, weight_decay=0.01)
    loader = torch.utils.data.DataLoader(token_rows(4 * STEPS), batch_size=4, shuffle=False)
    model, opt, loader = accelerator.prepare(model, opt, loader)
    start = 0
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        start = save_at or 0
    losses = []
    for step, batch in enumerate(loader):
        if step < start:
            continue  # the batches the first part trained on
        if step == steps:
            break
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
        if save_at is not None and save_dir is not None and step + 1 == save_at:
            accelerator.save_state(str(save_dir))
    return losses, accelerator.unwrap_model(model), opt


def test_prepare_bf16_clip_matches_torch() -> None:
    ours, ours_model, ours_opt = _run(gradfuse.optim.AdamW)
    # torch's fused AdamW, the Trainer's default; bfloat16 autocast: AUTOCAST_BF16_CURVE says
    # why the runs may differ by more than float32 ulps.
    theirs, theirs_model, _ = _run(functools.partial(torch.optim.AdamW, fused=True))
    assert isinstance(ours_opt.optimizer, gradfuse.optim.AdamW)  # AcceleratedOptimizer wraps it
    # bfloat16 autocast: the forward pass ran in bfloat16, the weights stayed float32.
    assert next(ours_model.parameters()).dtype == torch.float32
    assert len(ours) == STEPS
    assert ours[-1] < ours[0]
    a = torch.tensor(ours, dtype=torch.float64)
    b = torch.tensor(theirs, dtype=torch.float64)
    assert_close(a, b, AUTOCAST_BF16_CURVE, "per-step loss, gradfuse vs torch AdamW")
    for p, q in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), AUTOCAST_BF16_CURVE, "weights after the run")


def test_save_and_load_state_resumes_the_run(tmp_path: Path) -> None:
    whole, whole_model, _ = _run(gradfuse.optim.AdamW)
    AcceleratorState._reset_state(reset_partial_state=True)
    first, _, _ = _run(gradfuse.optim.AdamW, steps=3, save_at=3, save_dir=tmp_path / "state")
    assert (tmp_path / "state" / "optimizer.bin").is_file()
    AcceleratorState._reset_state(reset_partial_state=True)
    rest, model, opt = _run(gradfuse.optim.AdamW, save_at=3, resume_from=tmp_path / "state")
    assert all(int(s["step"]) == STEPS for s in opt.optimizer.state.values())
    got = torch.tensor(first + rest, dtype=torch.float64)
    assert_close(got, torch.tensor(whole, dtype=torch.float64), TRAINING_CURVE, "losses")
    for p, q in zip(model.parameters(), whole_model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, "resumed vs uninterrupted")
