"""A whole training step, as a user's loop runs it: ``zero_grad``, forward, backward, ``step``.

The update-only cases time the optimizer alone, with its inputs cold in memory. What a user sees
is the step between torch's own forward and backward ops, whose OpenMP threads are still awake
when the update starts (issue 15: gradfuse's own thread pool competed with them and made whole
steps slower than torch's, although its update alone was faster). These cases time the whole
step of two small models, gradfuse's AdamW against torch's fused and foreach AdamW, without and
with global-norm clipping (gradfuse's ``max_grad_norm=`` against ``clip_grad_norm_`` + torch's
step), each provider on its own copy of the same model and batch, interleaved in one process.

A sample is a block of consecutive steps (at least ``BLOCK_S``): a step follows the last
one without a pause, as in training; the reported time is per step. GB/s and % of the ceiling
do not apply (the step is mostly matrix products), so the table shows none.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from gradfuse.bench._case import OptimizerCase, Runner, Shape, Size, Unavailable

BLOCK_S = 0.1  # a sample: a block of steps this long (MLP: about 4 steps on the 2-core machine)


@dataclass(frozen=True)
class ModelSize(Size):
    """A model and its batch: ``widths`` of an MLP (Linear + ReLU between), or ``layers`` of an
    ``nn.TransformerEncoder`` of width ``d`` over ``seq`` positions."""

    model: str = "mlp"  # "mlp" or "transformer"
    widths: tuple[int, ...] = ()
    d: int = 0
    layers: int = 0
    heads: int = 0
    seq: int = 0
    batch: int = 32


def mlp_shapes(widths: tuple[int, ...]) -> tuple[Shape, ...]:
    shapes: list[Shape] = []
    for a, b in itertools.pairwise(widths):
        shapes += [(b, a), (b,)]
    return tuple(shapes)


def encoder_shapes(d: int, layers: int) -> tuple[Shape, ...]:
    """``nn.TransformerEncoderLayer(d, dim_feedforward=4d)`` parameters in module order."""
    ff = 4 * d
    one: list[Shape] = [(3 * d, d), (3 * d,), (d, d), (d,), (ff, d), (ff,), (d, ff), (d,)]
    one += [(d,), (d,), (d,), (d,)]  # norm1, norm2
    return tuple(one * layers)


def _mlp(name: str, widths: tuple[int, ...], batch: int) -> ModelSize:
    shapes = mlp_shapes(widths)
    params = sum(math.prod(s) for s in shapes)
    note = f"MLP {'-'.join(map(str, widths))}, batch {batch}: {params / 1e6:.1f}M params"
    return ModelSize(name, shapes, note, model="mlp", widths=widths, batch=batch)


def _encoder(name: str, d: int, layers: int, heads: int, seq: int, batch: int) -> ModelSize:
    shapes = encoder_shapes(d, layers)
    params = sum(math.prod(s) for s in shapes)
    note = (
        f"nn.TransformerEncoder {layers} layers, d={d}, {heads} heads, ff {4 * d}, batch {batch} "
        f"x {seq} positions: {params / 1e6:.1f}M params"
    )
    return ModelSize(
        name,
        shapes,
        note,
        model="transformer",
        d=d,
        layers=layers,
        heads=heads,
        seq=seq,
        batch=batch,
    )


MLP = _mlp("mlp", (1024, 2048, 2048, 1024), batch=32)
TRANSFORMER = _encoder("transformer", d=256, layers=4, heads=4, seq=32, batch=32)
MLP_SMALL = _mlp("mlp-small", (256, 512, 512, 256), batch=16)
TRANSFORMER_SMALL = _encoder("transformer-small", d=64, layers=2, heads=4, seq=16, batch=8)
SIZES = {s.name: s for s in (MLP, TRANSFORMER, MLP_SMALL, TRANSFORMER_SMALL)}


def build_model(size: ModelSize, device: str, seed: int) -> tuple[Any, Any, Any]:
    """The model (float32, training mode, no dropout) and one batch (input, target), the same
    for every provider of a given seed."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if size.model == "mlp":
            layers: list[nn.Module] = []
            for k, (a, b) in enumerate(itertools.pairwise(size.widths)):
                if k:
                    layers.append(nn.ReLU())
                layers.append(nn.Linear(a, b))
            model: nn.Module = nn.Sequential(*layers)
            x = torch.randn(size.batch, size.widths[0])
            y = torch.randn(size.batch, size.widths[-1])
        else:
            layer = nn.TransformerEncoderLayer(
                size.d, size.heads, dim_feedforward=4 * size.d, dropout=0.0, batch_first=True
            )
            model = nn.TransformerEncoder(layer, size.layers, enable_nested_tensor=False)
            x = torch.randn(size.batch, size.seq, size.d)
            y = torch.randn(size.batch, size.seq, size.d)
    return model.to(device).train(), x.to(device), y.to(device)


@dataclass
class TrainStepCase(OptimizerCase):
    """One training step of a small model with ``optimizer`` (see the module docstring)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kind = "train_step"

    def min_bytes(self, size: Size, itemsize: int) -> int:
        return 0  # no bandwidth figure: see the module docstring

    def sample_seconds(self) -> float:
        return BLOCK_S

    def providers(self, compile: bool) -> tuple[str, ...]:
        return ("gradfuse", "torch-foreach", "torch-fused")

    def sizes(self, quick: bool) -> list[Size]:
        return [MLP_SMALL, TRANSFORMER_SMALL] if quick else [MLP, TRANSFORMER]

    def parse_size(self, token: str) -> Size | None:
        return SIZES.get(token)

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        import torch

        if dtype != "float32":
            raise Unavailable(f"{self.name} trains float32 models (--dtype float32)")
        if not isinstance(size, ModelSize):
            raise Unavailable(f"{self.name} needs a model size ({', '.join(SIZES)})")
        model, x, y = build_model(size, device, seed)
        params = list(model.parameters())
        if provider == "gradfuse":
            opt = self.gradfuse_optimizer(params)
            clip = None
        elif provider in ("torch-foreach", "torch-fused"):
            fused = provider == "torch-fused"
            try:
                opt = self.torch_optimizer(params, foreach=not fused, fused=fused)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise Unavailable(f"{provider}: {exc}") from None
            clip = self.max_grad_norm
        else:
            raise Unavailable(f"{provider} does not apply to {self.name}")

        def step() -> Any:
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()  # type: ignore[no-untyped-call]
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            opt.step()
            return loss.detach()  # the loss before this step's update (for the tests)

        return Runner([step])


_ADAMW = {"lr": 1e-4, "weight_decay": 1e-2}

CASES = [
    TrainStepCase(
        "train_step_adamw",
        "adam",
        optimizer="AdamW",
        kwargs=_ADAMW,
        description="zero_grad + forward + backward + AdamW(lr=1e-4, weight_decay=1e-2).step()",
        check_configs=(),  # the "adamw" case checks the update against torch
    ),
    TrainStepCase(
        "train_step_adamw_clip",
        "adam_clip",
        optimizer="AdamW",
        kwargs=_ADAMW,
        max_grad_norm=1.0,
        description="the same step with AdamW(max_grad_norm=1.0) vs clip_grad_norm_(1.0) + AdamW",
        check_configs=(),
    ),
]
