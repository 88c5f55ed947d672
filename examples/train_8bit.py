"""8-bit AdamW against float32 AdamW: held-out loss of two small networks.

Trains, for several seeds, an MLP on scikit-learn's digits (cross-entropy) and an MLP on a noisy
regression (``sin(x @ w) + 0.3 noise``, MSE) with ``torch.optim.AdamW`` (float32 state) and
``gradfuse.optim.AdamW8bit`` (block-wise 8-bit state for every weight of at least 4096
elements), and with bitsandbytes' ``AdamW8bit`` when it is installed. Prints each optimizer's
held-out loss at the end (mean over the seeds) and its distance from float32's; ``--plot`` draws
the held-out curves (mean over the seeds) side by side.

    python examples/train_8bit.py --seeds 5 --plot 8bit_convergence.png
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

import gradfuse.optim as gopt

MakeOpt = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Task:
    """A dataset split, a model factory and the held-out loss."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    model: Callable[[], nn.Module]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def digits(seed: int) -> Task:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x, dtype=torch.float32) / 16.0
    yt = torch.tensor(y)
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:1400], perm[1400:]

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    return Task("digits", xt[tr], yt[tr], xt[te], yt[te], model, nn.functional.cross_entropy)


def regression(seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3000, 32, generator=g)
    w = torch.randn(32, 1, generator=g) / 32**0.5  # x @ w ~ N(0, 1): a learnable sine
    y = torch.sin(x @ w) + 0.3 * torch.randn(3000, 1, generator=g)

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 1)
        )

    return Task("regression", x[:2500], y[:2500], x[2500:], y[2500:], model, nn.functional.mse_loss)


def train(
    task: Task, make: MakeOpt, seed: int, steps: int, batch: int = 64, every: int = 25
) -> list[float]:
    """Held-out loss every ``every`` steps and at the end (the same init and batches for every
    optimizer of one seed)."""
    torch.manual_seed(seed)
    model = task.model()
    opt = make(model.parameters())
    g = torch.Generator().manual_seed(seed + 1)
    curve: list[float] = []
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            with torch.no_grad():
                curve.append(task.loss(model(task.x_test), task.y_test).item())
        if step == steps:
            break
        idx = torch.randint(0, len(task.x_train), (batch,), generator=g)
        loss = task.loss(model(task.x_train[idx]), task.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def optimizers(lr: float, with_bnb: bool) -> dict[str, MakeOpt]:
    out: dict[str, MakeOpt] = {
        "torch AdamW (float32 state)": lambda p: torch.optim.AdamW(p, lr=lr),
        "gradfuse AdamW8bit": lambda p: gopt.AdamW8bit(p, lr=lr),
    }
    if with_bnb:
        try:
            import bitsandbytes as bnb
        except ImportError:
            return out
        out["bitsandbytes AdamW8bit"] = lambda p: bnb.optim.AdamW8bit(p, lr=lr)
    return out


@dataclass
class Result:
    """Per task and optimizer: one held-out curve per seed."""

    curves: dict[str, dict[str, list[list[float]]]] = field(default_factory=dict)

    def final(self, task: str, opt: str) -> float:
        return statistics.mean(c[-1] for c in self.curves[task][opt])


def run(seeds: int, steps: int, lr: float = 1e-3, with_bnb: bool = True, every: int = 25) -> Result:
    result = Result()
    opts = optimizers(lr, with_bnb)
    for make_task in (digits, regression):
        for seed in range(seeds):
            task = make_task(seed)
            per_opt = result.curves.setdefault(task.name, {})
            for name, make in opts.items():
                per_opt.setdefault(name, []).append(train(task, make, seed, steps, every=every))
    return result


def plot(result: Result, path: str, every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result.curves), figsize=(11, 4))
    for ax, (task, per_opt) in zip(axes, result.curves.items(), strict=True):
        for name, curves in per_opt.items():
            mean = [statistics.mean(v) for v in zip(*curves, strict=True)]
            ax.plot([i * every for i in range(len(mean))], mean, label=name)
        ax.set_title(f"{task}: held-out loss (mean of {len(curves)} seeds)")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--plot", default=None, help="PNG of the held-out curves")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small matmuls: extra threads only spin
    result = run(args.seeds, args.steps, args.lr)
    for task, per_opt in result.curves.items():
        base = result.final(task, "torch AdamW (float32 state)")
        for name in per_opt:
            value = result.final(task, name)
            print(f"{task:10s} {name:30s} {value:.4f} ({(value - base) / base * 100:+.2f}%)")
    if args.plot:
        plot(result, args.plot, every=25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
