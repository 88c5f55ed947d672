"""Train a small transformers causal LM with the Hugging Face Trainer: gradfuse vs the defaults.

The text is PyTorch's own README, as shipped inside the installed torch package (its package
metadata), read byte by byte (a 256-token vocabulary, no tokenizer, nothing downloaded). The
model is a 2-layer Llama built from a config. Two runs from the same initial weights see the
same batches in the same order:

- defaults: the Trainer's optimizer (``adamw_torch_fused``) and the model's own loss
  (transformers' ``ForCausalLMLoss``)
- gradfuse: ``optimizer_cls_and_kwargs=(gradfuse.optim.AdamW, ...)`` and
  ``gradfuse.integrations.transformers.use_fused_cross_entropy(model)``

It prints both final losses and median times per step (forward, backward and optimizer step,
as the Trainer runs them), and plots the loss curves and the time of every step side by side.

    python examples/train_causal_lm.py --steps 300 --plot train_causal_lm.png
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model from a config: nothing from the Hub

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import gradfuse
from gradfuse.bench import tqdm_bar
from gradfuse.integrations.transformers import use_fused_cross_entropy

VOCAB = 256  # bytes


@dataclass
class Run:
    name: str
    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)


def corpus() -> bytes:
    """PyTorch's README, from the installed package's metadata (tens of kilobytes of text)."""
    text = importlib.metadata.metadata("torch").get_payload()  # type: ignore[attr-defined]
    if not isinstance(text, str) or len(text) < 10_000:
        raise RuntimeError("torch's installed metadata has no long description to train on")
    return text.encode("utf-8")


def blocks(data: bytes, seq: int) -> list[dict[str, torch.Tensor]]:
    """Non-overlapping ``seq``-byte rows; labels are the inputs (the model shifts them)."""
    ids = torch.tensor(list(data), dtype=torch.long)
    n = len(ids) // seq
    rows = ids[: n * seq].view(n, seq)
    return [{"input_ids": r, "labels": r} for r in rows]


def make_model(seq: int, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=seq,
        tie_word_embeddings=False,
        use_cache=False,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class _StepTimer(TrainerCallback):  # type: ignore[misc]
    """Times every step; with ``progress``, a tqdm bar that stays readable in a log (the
    Trainer's own bar writes a carriage-return redraw there for every step)."""

    def __init__(self, run: Run, progress: bool) -> None:
        self.run = run
        self.progress = progress
        self.bar: Any = None
        self.t0 = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress:
            self.bar = tqdm_bar(state.max_steps, self.run.name)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.run.step_times.append(time.perf_counter() - self.t0)
        if self.bar is not None:
            self.bar.update()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()


def train_one(
    name: str,
    steps: int,
    batch: int,
    seq: int,
    lr: float,
    seed: int,
    gradfuse_side: bool,
    progress: bool,
) -> Run:
    run = Run(name)
    model = make_model(seq, seed)
    extra: dict[str, Any] = {}
    if gradfuse_side:
        model = use_fused_cross_entropy(model)
        extra["optimizer_cls_and_kwargs"] = (
            gradfuse.optim.AdamW,
            {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8},
        )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=lr,
            weight_decay=0.01,
            warmup_steps=max(steps // 20, 1),
            lr_scheduler_type="cosine",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=seed,
            data_seed=seed,
            dataloader_num_workers=0,
            disable_tqdm=True,  # _StepTimer's bar instead
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=blocks(corpus(), seq),
            callbacks=[_StepTimer(run, progress)],
            **extra,
        )
        # logging_steps=1 records every loss; the Trainer would also print each one.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    run.losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return run


def train(
    steps: int = 300,
    batch: int = 16,
    seq: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Run, Run]:
    """(gradfuse, defaults), the same seed, data order and schedule."""
    kw: dict[str, Any] = {
        "steps": steps,
        "batch": batch,
        "seq": seq,
        "lr": lr,
        "seed": seed,
        "progress": progress,
    }
    theirs = train_one("Trainer defaults", gradfuse_side=False, **kw)
    ours = train_one("gradfuse AdamW + cross-entropy", gradfuse_side=True, **kw)
    return ours, theirs


def plot(ours: Run, theirs: Run, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run, style in ((theirs, "-"), (ours, "--")):
        ax1.plot(run.losses, style, lw=1.2, label=run.name)
        med = statistics.median(run.step_times) * 1e3
        ax2.plot(
            [t * 1e3 for t in run.step_times], style, lw=0.8, label=f"{run.name}: {med:.1f} ms"
        )
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (nats per byte)")
    ax1.set_title("loss: the curves coincide", fontsize=10)
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("time per step (ms)")
    ax2.set_title("time per step (median in the legend)", fontsize=10)
    lo, hi = _range(ours.step_times + theirs.step_times)
    ax2.set_ylim(lo * 1e3 * 0.9, hi * 1e3 * 1.1)
    ax2.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _range(times: list[float]) -> tuple[float, float]:
    """1st-99th percentile: a rare slow step (another process) would flatten the rest."""
    s = sorted(times)
    return s[len(s) // 100], s[min(len(s) - 1, len(s) * 99 // 100)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="train_causal_lm.png", help="PNG of curves and times")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    ours, theirs = train(
        args.steps, args.batch, args.seq, args.lr, args.seed, progress=not args.no_progress
    )
    what = (
        f"2-layer Llama (byte vocabulary) on PyTorch's README, {args.steps} steps of "
        f"{args.batch} x {args.seq} bytes, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(what)
    print(f"{'':<32} {'final loss':>10} {'step (median)':>14}")
    for run in (ours, theirs):
        med = statistics.median(run.step_times) * 1e3
        print(f"{run.name:<32} {run.losses[-1]:>10.4f} {med:>11.2f} ms")
    worst = max(
        abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours.losses, theirs.losses, strict=True)
    )
    print(f"largest relative difference between the loss curves: {worst:.2e}")
    plot(ours, theirs, args.plot, what)
    print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
