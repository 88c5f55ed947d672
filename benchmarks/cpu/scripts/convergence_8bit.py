"""One-seed convergence comparison of 8-bit AdamW (benchmarks/cpu/2026-12-06-8bit.md): held-out
loss of small MLPs trained with torch AdamW, gradfuse AdamW8bit and bitsandbytes AdamW8bit.

    PYTHONPATH=python python benchmarks/cpu/scripts/convergence_8bit.py
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

import gradfuse.optim as gopt

torch.manual_seed(0)
X, y = load_digits(return_X_y=True)
X = torch.tensor(X, dtype=torch.float32) / 16.0
y = torch.tensor(y)
perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
tr, te = perm[:1400], perm[1400:]


def run(make):
    torch.manual_seed(1)
    m = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )
    opt = make(m.parameters())
    g = torch.Generator().manual_seed(2)
    for _step in range(600):
        idx = tr[torch.randint(0, len(tr), (64,), generator=g)]
        loss = nn.functional.cross_entropy(m(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.cross_entropy(m(X[te]), y[te]).item()


a = run(lambda p: torch.optim.AdamW(p, lr=1e-3))
b = run(lambda p: gopt.AdamW8bit(p, lr=1e-3))
print("digits held-out", a, b, (b - a) / a)
# regression MLP, noisy
g = torch.Generator().manual_seed(3)
Xr = torch.randn(3000, 32, generator=g)
w = torch.randn(32, 1, generator=g)
yr = torch.sin(Xr @ w) + 0.3 * torch.randn(3000, 1, generator=g)


def run2(make):
    torch.manual_seed(4)
    m = nn.Sequential(
        nn.Linear(32, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 1)
    )
    opt = make(m.parameters())
    gg = torch.Generator().manual_seed(5)
    for _step in range(600):
        idx = torch.randint(0, 2500, (64,), generator=gg)
        loss = nn.functional.mse_loss(m(Xr[idx]), yr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.mse_loss(m(Xr[2500:]), yr[2500:]).item()


a = run2(lambda p: torch.optim.AdamW(p, lr=1e-3))
b = run2(lambda p: gopt.AdamW8bit(p, lr=1e-3))
print("regression held-out", a, b, (b - a) / a)
import bitsandbytes as bnb

print("digits bnb", run(lambda p: bnb.optim.AdamW8bit(p, lr=1e-3)))
print("regression bnb", run2(lambda p: bnb.optim.AdamW8bit(p, lr=1e-3)))
