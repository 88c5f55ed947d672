"""Train a small network on real data with gradfuse's drop-ins, beside the same run in torch.

The data is scikit-learn's handwritten digits (1797 8x8 images, 10 classes; it ships inside
scikit-learn, nothing is downloaded). Two copies of one MLP, initialised identically, see the
same batches in the same order:

- gradfuse: ``gradfuse.optim.AdamW`` + ``gradfuse.nn.CrossEntropyLoss``
- torch:    ``torch.optim.AdamW``    + ``torch.nn.CrossEntropyLoss``

The two steps alternate, so both runs share the machine's state equally. At the end it prints
both test accuracies and step times, and saves both loss curves as a PNG. The curves agree to
rounding (tests/examples/test_train_digits.py checks that).

    pip install scikit-learn matplotlib         # (the `test` extra has both)
    python examples/train_digits.py --steps 500 --plot digits_loss.png

A build of gradfuse that does not have AdamW / CrossEntropyLoss yet uses SGD with momentum /
torch's loss on both sides instead, and says so.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import gradfuse


@dataclass
class Run:
    name: str
    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    optimizer_times: list[float] = field(default_factory=list)
    test_accuracy: float = 0.0


@dataclass
class Result:
    gradfuse: Run
    torch: Run
    setup: str
    notes: list[str]


def load_digits_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """80/20 train/test split of the digits, pixels scaled to [0, 1], float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(y))
    train, test = perm[:n_train], perm[n_train:]
    return x[train], y[train], x[test], y[test]


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def choose(lr: float) -> tuple[Callable[..., Any], Callable[..., Any], Any, Any, str, list[str]]:
    """(gradfuse optimizer factory, torch optimizer factory, gradfuse loss, torch loss, what
    was chosen, notes). Falls back where this gradfuse build lacks AdamW / CrossEntropyLoss."""
    notes: list[str] = []
    gf_adamw = getattr(gradfuse.optim, "AdamW", None)
    if gf_adamw is not None:
        gf_opt: Callable[..., Any] = lambda p: gf_adamw(p, lr=lr, weight_decay=1e-2)
        th_opt: Callable[..., Any] = lambda p: torch.optim.AdamW(
            p, lr=lr, weight_decay=1e-2, foreach=False
        )
        opt_name = "AdamW"
    else:
        sgd_lr = 0.05
        gf_opt = lambda p: gradfuse.optim.SGD(p, lr=sgd_lr, momentum=0.9)
        th_opt = lambda p: torch.optim.SGD(p, lr=sgd_lr, momentum=0.9, foreach=False)
        opt_name = f"SGD(lr={sgd_lr}, momentum=0.9)"
        notes.append(
            "gradfuse.optim.AdamW is not in this build yet: both runs use SGD with momentum"
        )
    try:
        import gradfuse.nn as gf_nn

        gf_ce = getattr(gf_nn, "CrossEntropyLoss", None)
    except ImportError:
        gf_ce = None
    if gf_ce is not None:
        gf_loss: Any = gf_ce()
        loss_name = "CrossEntropyLoss"
    else:
        gf_loss = nn.CrossEntropyLoss()
        loss_name = "torch's CrossEntropyLoss"
        notes.append(
            "gradfuse.nn.CrossEntropyLoss is not in this build yet: both runs use torch's loss"
        )
    setup = f"{opt_name} + {loss_name}"
    return gf_opt, th_opt, gf_loss, nn.CrossEntropyLoss(), setup, notes


def batches(n: int, batch: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Index batches over ``steps`` steps: a fresh shuffle every epoch, one fixed sequence."""
    gen = torch.Generator().manual_seed(seed + 1)
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            if done == steps:
                return
            yield perm[i : i + batch]
            done += 1


def _progress(it: Iterable[Any], total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        return iter(it)
    # tqdm (the bench extra): redraws in place on a terminal, separate lines in a log.
    from gradfuse.bench import progress

    return progress(it, total, "training")


def _timed_step(
    model: nn.Module, opt: Any, loss_fn: Any, x: torch.Tensor, y: torch.Tensor, run: Run
) -> None:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    run.losses.append(float(loss.detach()))
    run.step_times.append(t2 - t0)
    run.optimizer_times.append(t2 - t1)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(
    steps: int = 500,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> Result:
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    gf_model = make_model(seed)
    th_model = copy.deepcopy(gf_model)  # the same initial weights
    gf_opt_f, th_opt_f, gf_loss, th_loss, setup, notes = choose(lr)
    gf_opt, th_opt = gf_opt_f(gf_model.parameters()), th_opt_f(th_model.parameters())
    gf_run, th_run = Run("gradfuse"), Run("torch")
    for step, idx in enumerate(
        _progress(batches(len(y_train), batch, steps, seed), steps, progress)
    ):
        x, y = x_train[idx], y_train[idx]
        # Alternate who goes first, so neither side always runs on a warmer cache.
        pair = [(gf_model, gf_opt, gf_loss, gf_run), (th_model, th_opt, th_loss, th_run)]
        for model, opt, loss_fn, run in pair if step % 2 == 0 else pair[::-1]:
            _timed_step(model, opt, loss_fn, x, y, run)
    gf_run.test_accuracy = _accuracy(gf_model, x_test, y_test)
    th_run.test_accuracy = _accuracy(th_model, x_test, y_test)
    return Result(gf_run, th_run, setup, notes)


def plot(result: Result, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run, style in ((result.torch, "-"), (result.gradfuse, "--")):
        ax.plot(run.losses, style, lw=1.2, label=f"{run.name} (test acc {run.test_accuracy:.1%})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (batch)")
    ax.set_title(
        f"digits MLP, {result.setup}\ngradfuse vs torch: same initial weights and batches",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="train_digits.png", help="PNG of both loss curves")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    result = train(args.steps, args.batch, args.lr, args.seed)
    for note in result.notes:
        print(f"note: {note}")
    print(f"digits MLP 64-128-128-10, {args.steps} steps of batch {args.batch}: {result.setup}")
    print(f"{'':<10} {'test acc':>9} {'final loss':>11} {'step (median)':>14} {'opt.step':>10}")
    for run in (result.gradfuse, result.torch):
        print(
            f"{run.name:<10} {run.test_accuracy:>9.1%} {run.losses[-1]:>11.4f} "
            f"{statistics.median(run.step_times) * 1e6:>11.0f} us "
            f"{statistics.median(run.optimizer_times) * 1e6:>7.0f} us"
        )
    worst = max(
        abs(a - b) / max(abs(b), 1e-12)
        for a, b in zip(result.gradfuse.losses, result.torch.losses, strict=True)
    )
    print(f"loss curves: largest relative difference {worst:.2e}")
    if not args.no_plot:
        plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
