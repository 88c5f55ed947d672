"""Muon for the hidden matrices + AdamW for the rest (one gradfuse optimizer), beside AdamW alone.

The data is scikit-learn's handwritten digits (1797 8x8 images, 10 classes; it ships inside
scikit-learn, nothing is downloaded). Two copies of one MLP, initialised identically, see the
same batches in the same order:

- muon:  ``gradfuse.optim.Muon(muon_param_groups(model))``: the hidden ``nn.Linear`` weights
         on Muon (lr 0.02); the output layer, biases and the norm on the fused AdamW inside it
         (lr 3e-3);
- adamw: ``gradfuse.optim.AdamW`` on every parameter (lr 3e-3).

It prints both runs' final training loss and test accuracy, and saves both loss curves as a PNG
with ``--plot``::

    pip install scikit-learn matplotlib         # (the `test` extra has both)
    python examples/train_muon.py --steps 300 --plot muon_loss.png
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field

import torch
from torch import nn

import gradfuse
from gradfuse.optim import muon_param_groups


@dataclass
class Run:
    name: str
    losses: list[float] = field(default_factory=list)
    test_accuracy: float = 0.0


def load_digits_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """80/20 train/test split of the digits, pixels scaled to [0, 1], float32."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def make_model(hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, 10),
    )


def train(steps: int = 300, hidden: int = 128, batch: int = 64, seed: int = 0) -> dict[str, Run]:
    """Both runs; returns them by name (``"muon"``, ``"adamw"``)."""
    x, y, x_test, y_test = load_digits_split(seed)
    base = make_model(hidden, seed)
    models = {"muon": base, "adamw": copy.deepcopy(base)}
    opts = {
        "muon": gradfuse.optim.Muon(
            muon_param_groups(models["muon"], muon={"lr": 0.02}, adamw={"lr": 3e-3}),
            weight_decay=0.01,
        ),
        "adamw": gradfuse.optim.AdamW(models["adamw"].parameters(), lr=3e-3, weight_decay=0.01),
    }
    runs = {name: Run(name) for name in models}
    gen = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        for name, model in models.items():
            opt = opts[name]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            runs[name].losses.append(float(loss.detach()))
    with torch.no_grad():
        for name, model in models.items():
            pred = model(x_test).argmax(-1)
            runs[name].test_accuracy = float((pred == y_test).double().mean())
    return runs


def _smooth(values: list[float], k: int = 20) -> list[float]:
    out = []
    for i in range(len(values)):
        window = values[max(0, i - k + 1) : i + 1]
        out.append(sum(window) / len(window))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="write the loss curves to this PNG")
    args = parser.parse_args()
    runs = train(args.steps, args.hidden, seed=args.seed)
    for run in runs.values():
        last = sum(run.losses[-20:]) / len(run.losses[-20:])
        print(
            f"{run.name:>6}: training loss (last 20 steps) {last:.4f}, "
            f"test accuracy {run.test_accuracy:.3f}"
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        labels = {"muon": "Muon (hidden) + AdamW (rest)", "adamw": "AdamW"}
        for run in runs.values():
            ax.plot(_smooth(run.losses), label=labels[run.name])
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (20-step mean)")
        ax.set_yscale("log")
        ax.set_title(f"digits MLP, hidden {args.hidden}: gradfuse.optim.Muon vs AdamW")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
