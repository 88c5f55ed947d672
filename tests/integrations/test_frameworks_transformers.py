"""Hugging Face transformers: gradfuse's optimizers under the real ``Trainer`` and gradfuse's
fused cross-entropy inside a causal LM, each against transformers' own default on the same
seed (tiny Llama from a config, CPU, no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import frameworks_helpers as fh
import pytest
import torch
from frameworks_helpers import VOCAB, tiny_llama, token_rows
from transformers import Trainer, TrainingArguments
from transformers.loss.loss_utils import ForCausalLMLoss

import gradfuse
from gradfuse.integrations.transformers import causal_lm_loss, use_fused_cross_entropy
from tolerances import AUTOCAST_BF16_CURVE, LOSS, TRAINING_CURVE, Tol, assert_close

assert fh  # HF_HUB_OFFLINE is set by frameworks_helpers before transformers is imported

STEPS = 6


def _args(out: Path, **kw: Any) -> TrainingArguments:
    base: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": 4,
        "learning_rate": 3e-3,
        "weight_decay": 0.01,
        "max_steps": STEPS,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "seed": 0,
        "data_seed": 0,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 2,
    }
    base.update(kw)
    return TrainingArguments(**base)


def _losses(trainer: Trainer) -> torch.Tensor:
    return torch.tensor(
        [e["loss"] for e in trainer.state.log_history if "loss" in e], dtype=torch.float64
    )


def _train(out: Path, model: Any = None, rows: int = 32, **kw: Any) -> Trainer:
    model = tiny_llama() if model is None else model
    extra = {k: kw.pop(k) for k in ("optimizers", "optimizer_cls_and_kwargs") if k in kw}
    trainer = Trainer(model=model, args=_args(out, **kw), train_dataset=token_rows(rows), **extra)
    trainer.train()
    return trainer


def _gf_adamw_kwargs() -> dict[str, Any]:
    # The Trainer's defaults for adamw_torch_fused: betas, eps from TrainingArguments.
    return {"lr": 3e-3, "betas": (0.9, 0.999), "eps": 1e-8}


def _assert_same_run(ours: Trainer, theirs: Trainer, tol: Tol = TRAINING_CURVE) -> None:
    a, b = _losses(ours), _losses(theirs)
    assert len(a) == len(b) == STEPS
    assert_close(a, b, tol, "per-step training loss, gradfuse vs the Trainer default")
    assert a[-1] < a[0]  # it trains
    for (name, p), q in zip(ours.model.named_parameters(), theirs.model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), tol, name)


def test_optimizer_cls_and_kwargs_matches_default(tmp_path: Path) -> None:
    theirs = _train(tmp_path / "default")  # optim="adamw_torch_fused", the Trainer's default
    ours = _train(
        tmp_path / "gf", optimizer_cls_and_kwargs=(gradfuse.optim.AdamW, _gf_adamw_kwargs())
    )
    assert isinstance(ours.optimizer.optimizer, gradfuse.optim.AdamW)  # accelerate's wrapper
    # The Trainer split decay / no-decay groups (biases, norms) for our class too.
    assert {g["weight_decay"] for g in ours.optimizer.param_groups} == {0.0, 0.01}
    _assert_same_run(ours, theirs)


def test_optimizers_tuple_with_scheduler_and_accumulation(tmp_path: Path) -> None:
    """``optimizers=(opt, sched)``, gradient accumulation over 2 micro-batches and the
    Trainer's max_grad_norm clipping, against the same with torch's AdamW."""

    def run(cls: type[torch.optim.Optimizer], out: Path) -> Trainer:
        model = tiny_llama()
        opt = cls(model.parameters(), lr=3e-3, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        return _train(
            out,
            model,
            optimizers=(opt, sched),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_grad_norm=0.5,
        )

    ours = run(gradfuse.optim.AdamW, tmp_path / "gf")
    theirs = run(torch.optim.AdamW, tmp_path / "torch")
    assert ours.lr_scheduler.get_last_lr() == theirs.lr_scheduler.get_last_lr()
    _assert_same_run(ours, theirs)


def test_fused_clipping_matches_trainer_clipping(tmp_path: Path) -> None:
    """gradfuse's in-step clipping (``max_grad_norm=`` on the optimizer, Trainer's off) gives
    the run the Trainer's own clipping gives with torch's AdamW: use one, not both."""
    kw = _gf_adamw_kwargs()
    ours = _train(
        tmp_path / "gf",
        optimizer_cls_and_kwargs=(gradfuse.optim.AdamW, {**kw, "max_grad_norm": 0.5}),
        max_grad_norm=0.0,
    )
    theirs = _train(tmp_path / "torch", max_grad_norm=0.5)
    _assert_same_run(ours, theirs)


def test_bf16_on_cpu(tmp_path: Path) -> None:
    """``bf16=True`` (autocast to bfloat16 on the CPU, float32 weights): gradfuse's AdamW and the
    default see the same bfloat16-rounded forward passes."""
    theirs = _train(tmp_path / "default", bf16=True)
    ours = _train(
        tmp_path / "gf",
        bf16=True,
        optimizer_cls_and_kwargs=(gradfuse.optim.AdamW, _gf_adamw_kwargs()),
    )
    # The weights stay float32 and so does the optimizer state; only matmuls run in bfloat16,
    # and the two runs execute the same ones on the same inputs while the weights agree.
    assert next(ours.model.parameters()).dtype == torch.float32
    _assert_same_run(ours, theirs, AUTOCAST_BF16_CURVE)


def test_resume_from_checkpoint(tmp_path: Path) -> None:
    """Stop at step 3 with a checkpoint, resume to step 6: the same run as one without a stop
    (the optimizer state saved and loaded by the Trainer). A constant learning rate: with
    warm-up and decay, transformers 5.25's first step after a resume runs at the schedule's
    step-0 rate, with torch's AdamW as with gradfuse's (measured), so neither would match."""
    kw: dict[str, Any] = {"lr_scheduler_type": "constant", "warmup_steps": 0}
    opt = {"optimizer_cls_and_kwargs": (gradfuse.optim.AdamW, _gf_adamw_kwargs())}
    whole = _train(tmp_path / "whole", **kw, **opt)
    _train(tmp_path / "parts", max_steps=3, save_strategy="steps", save_steps=3, **kw, **opt)
    ckpt = tmp_path / "parts" / "checkpoint-3"
    assert (ckpt / "optimizer.pt").is_file()
    resumed = Trainer(
        model=tiny_llama(),
        args=_args(tmp_path / "parts", save_steps=3, **kw),
        train_dataset=token_rows(32),
        **opt,
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == STEPS
    state = resumed.optimizer.optimizer.state
    assert all(int(s["step"]) == STEPS for s in state.values())
    assert_close(_losses(resumed), _losses(whole), TRAINING_CURVE, "losses, resumed vs whole")
    for p, q in zip(resumed.model.parameters(), whole.model.parameters(), strict=True):
        assert_close(p.detach(), q.detach(), TRAINING_CURVE, "resumed vs uninterrupted")


# ---- gradfuse's fused cross-entropy in the model -------------------------------------------


@pytest.mark.parametrize("num_items", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_lm_loss_equals_transformers(num_items: bool, dtype: torch.dtype) -> None:
    logits = torch.randn(3, 7, VOCAB, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, VOCAB, (3, 7))
    labels[0, :4] = -100
    labels[2, 5] = -100
    n = labels[..., 1:].ne(-100).sum() if num_items else None
    ours = causal_lm_loss(logits, labels, VOCAB, num_items_in_batch=n)
    (g_ours,) = torch.autograd.grad(ours, logits)
    theirs = ForCausalLMLoss(logits, labels, VOCAB, num_items_in_batch=n)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    assert ours.dtype == theirs.dtype == torch.float32
    assert_close(ours, theirs, LOSS[torch.float32], "loss")
    assert_close(g_ours, g_theirs, LOSS[dtype], "d loss / d logits")


def test_causal_lm_loss_given_shift_labels() -> None:
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    shift = torch.randint(0, VOCAB, (2, 5))
    shift[1, 2:] = -100
    assert_close(
        causal_lm_loss(logits, None, VOCAB, shift_labels=shift),
        ForCausalLMLoss(logits, None, VOCAB, shift_labels=shift),
        LOSS[torch.float32],
    )


def test_causal_lm_loss_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"logits has shape \(2, 5, 64\).*vocab_size=65"):
        causal_lm_loss(torch.randn(2, 5, VOCAB), torch.zeros(2, 5, dtype=torch.long), 65)
    with pytest.raises(ValueError, match=r"labels has shape \(2, 4\).*\(2, 5\)"):
        causal_lm_loss(torch.randn(2, 5, VOCAB), torch.zeros(2, 4, dtype=torch.long), VOCAB)
    with pytest.raises(ValueError, match="labels is None"):
        causal_lm_loss(torch.randn(2, 5, VOCAB), None, VOCAB)
    with pytest.raises(TypeError, match="PreTrainedModel"):
        use_fused_cross_entropy(torch.nn.Linear(2, 2))


def test_model_forward_loss_equals_transformers() -> None:
    """The one line: the model's own ``forward(labels=...)`` loss and the gradients of every
    weight equal transformers' default loss's."""
    rows = token_rows(4)
    ids = torch.stack([r["input_ids"] for r in rows])
    labels = torch.stack([r["labels"] for r in rows])
    theirs_model = tiny_llama()
    ours_model = use_fused_cross_entropy(tiny_llama())
    assert ours_model.loss_function is causal_lm_loss
    for kw in ({}, {"num_items_in_batch": labels[..., 1:].ne(-100).sum()}):
        ours = ours_model(input_ids=ids, labels=labels, **kw).loss
        theirs = theirs_model(input_ids=ids, labels=labels, **kw).loss
        assert_close(ours, theirs, LOSS[torch.float32], f"loss {kw}")
        ours_model.zero_grad()
        theirs_model.zero_grad()
        ours.backward()
        theirs.backward()
        for (name, p), q in zip(
            ours_model.named_parameters(), theirs_model.parameters(), strict=True
        ):
            assert p.grad is not None
            assert q.grad is not None
            assert_close(p.grad, q.grad, TRAINING_CURVE, f"grad of {name} {kw}")


def test_trainer_with_fused_loss_and_accumulation(tmp_path: Path) -> None:
    """The Trainer passes ``num_items_in_batch`` (the non-ignored shifted labels of all
    accumulated micro-batches) to the model's loss: the run with gradfuse's loss is the run
    with transformers' loss."""
    kw: dict[str, Any] = {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2}
    theirs = _train(tmp_path / "default", **kw)
    ours = _train(tmp_path / "gf", use_fused_cross_entropy(tiny_llama()), **kw)
    _assert_same_run(ours, theirs)


def test_use_fused_cross_entropy_refuses_other_losses() -> None:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_labels=3,
    )
    model = LlamaForSequenceClassification(config)
    with pytest.raises(ValueError, match=r"loss_type='ForSequenceClassification'.*causal LM"):
        use_fused_cross_entropy(model)
