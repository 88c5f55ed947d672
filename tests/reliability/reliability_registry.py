"""One entry per optimizer and per loss: the reliability tests (bad input, fuzzing, determinism,
threads, leaks) are parametrized over these tables, so a new op joins every test with one entry.

Entries name torch's public API (``torch.optim.<Name>`` keyword arguments,
``torch.nn.functional.<name>`` arguments) and the gradfuse symbols that mirror it. An entry
whose gradfuse symbol does not exist in this build fails with a message naming the symbol
(:func:`require`): a rename must not turn the reliability suite into skips with CI green.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import gradfuse
from gradfuse.testing import has_torch_class, reference_class

# ---------------------------------------------------------------------------------------------
# Optimizers


@dataclass(frozen=True)
class OptimSpec:
    """An optimizer: its torch-named class, the gradfuse functional under it, and how to build a
    valid functional call (which state lists it takes and how they start)."""

    name: str  # torch.optim.<name> and gradfuse.optim.<name>
    configs: tuple[dict[str, Any], ...]  # valid constructor kwargs, torch names
    functional: str  # gradfuse.functional.<functional>
    # Functional state arguments, in order: (argument name, kind). Kinds: "like" (random, like
    # params), "positive" (random >= 0, e.g. second moments), "step" (0-dim float32 step
    # counts, torch's convention), "one" (0-dim float32 ones: products of factors).
    state: tuple[tuple[str, str], ...] = ()
    functional_kwargs: dict[str, Any] = field(default_factory=dict)  # a valid call's options

    @property
    def id(self) -> str:
        return self.name

    def gf_class(self) -> Any:
        return getattr(gradfuse.optim, self.name, None)

    def gf_functional(self) -> Any:
        return getattr(gradfuse.functional, self.functional, None)

    def torch_class(self) -> Any:
        """torch's class of that name, or gradfuse.testing's reference where torch has none."""
        return reference_class(self.name)

    def has_torch_class(self) -> bool:
        return has_torch_class(self.name)

    def torch_kwargs(self, config: dict[str, Any]) -> dict[str, Any]:
        """The same options for the reference: its slow for-loop path."""
        return {**config, "foreach": False}


def _lr(config: dict[str, Any], lr: float) -> dict[str, Any]:
    return {"lr": lr, **config}


OPTIMIZERS: list[OptimSpec] = [
    OptimSpec(
        "SGD",
        (
            {"lr": 0.1},
            {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True},
        ),
        "sgd_",
        (("momentum_buffers", "like"),),
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
    ),
    OptimSpec(
        "Adam",
        (
            {"lr": 1e-2},
            {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
            {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
        ),
        "adam_",
        (("exp_avgs", "like"), ("exp_avg_sqs", "positive"), ("state_steps", "step")),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "AdamW",
        ({"lr": 1e-2}, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
        "adamw_",
        (("exp_avgs", "like"), ("exp_avg_sqs", "positive"), ("state_steps", "step")),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "Adamax",
        ({"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 0.1, "maximize": True}),
        "adamax_",
        (("exp_avgs", "like"), ("exp_infs", "positive"), ("state_steps", "step")),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "NAdam",
        (
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 1e-2, "momentum_decay": 1e-2, "weight_decay": 0.1, "maximize": True},
        ),
        "nadam_",
        (
            ("exp_avgs", "like"),
            ("exp_avg_sqs", "positive"),
            ("mu_products", "one"),
            ("state_steps", "step"),
        ),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "RAdam",
        (
            {"lr": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
        "radam_",
        (("exp_avgs", "like"), ("exp_avg_sqs", "positive"), ("state_steps", "step")),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "Adagrad",
        (
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
            {"lr": 0.1, "eps": 1e-6, "maximize": True},
        ),
        "adagrad_",
        (("state_sums", "positive"), ("state_steps", "step")),
        {"lr": 0.1},
    ),
    OptimSpec(
        "RMSprop",
        (
            {"lr": 1e-2},
            {"lr": 1e-2, "centered": True, "momentum": 0.9, "weight_decay": 0.1},
            {"lr": 1e-2, "alpha": 0.9, "momentum": 0.5, "maximize": True},
        ),
        "rmsprop_",
        (("square_avgs", "positive"),),
        {"lr": 1e-2},
    ),
    OptimSpec(
        "Lion",
        (
            {"lr": 1e-3},
            {"lr": 1e-3, "betas": (0.95, 0.98), "weight_decay": 0.1, "maximize": True},
        ),
        "lion_",
        (("exp_avgs", "like"),),
        {"lr": 1e-3},
    ),
    OptimSpec(
        "ADOPT",
        (
            {"lr": 1e-3},
            {"lr": 1e-3, "weight_decay": 0.1, "weight_decouple": True, "maximize": True},
        ),
        "adopt_",
        (("exp_avgs", "like"), ("exp_avg_sqs", "positive"), ("state_steps", "step")),
        {"lr": 1e-3},
    ),
    OptimSpec(
        "AdEMAMix",
        (
            {"lr": 1e-3},
            {"lr": 1e-3, "betas": (0.8, 0.99, 0.999), "t_alpha": 5, "t_beta3": 5},
        ),
        "ademamix_",
        (
            ("exp_avgs", "like"),
            ("exp_avg_slows", "like"),
            ("exp_avg_sqs", "positive"),
            ("state_steps", "step"),
        ),
        {"lr": 1e-3},
    ),
]


def require(obj: Any, what: str) -> Any:
    """``obj``; a symbol the registry names but this build lacks fails the test."""
    if obj is None:
        pytest.fail(
            f"{what} does not exist in this build, but the reliability registry names it "
            f"(renamed or removed? update its entry in tests/reliability/reliability_registry.py)",
            pytrace=False,
        )
    return obj


def require_class(spec: OptimSpec) -> Any:
    return require(spec.gf_class(), f"gradfuse.optim.{spec.name}")


def require_functional(spec: OptimSpec) -> Any:
    return require(spec.gf_functional(), f"gradfuse.functional.{spec.functional}")


def optim_params(
    specs: Iterable[OptimSpec] = OPTIMIZERS, *, all_configs: bool = False
) -> list[Any]:
    """pytest params (spec, config): every spec with its first config, or with each config."""
    out = []
    for s in specs:
        configs = s.configs if all_configs else s.configs[:1]
        for k, c in enumerate(configs):
            out.append(pytest.param(s, c, id=f"{s.name}-{k}"))
    return out


def make_state(kind: str, like: Any) -> Any:
    """One entry of a functional state list (see OptimSpec.state)."""
    if kind == "step":
        return torch.tensor(1.0)
    if kind == "one":
        return torch.tensor(1.0)
    if isinstance(like, torch.Tensor):
        x = torch.randn(like.shape, dtype=torch.float64).to(like.dtype)
        return x.abs() if kind == "positive" else x
    import numpy as np

    rng = np.random.default_rng(len(like.shape) + like.size)
    a = rng.standard_normal(like.shape).astype(like.dtype)
    return np.abs(a) if kind == "positive" else a


def functional_call(
    spec: OptimSpec, params: list[Any], grads: list[Any], state: dict[str, list[Any]]
) -> Callable[[], None]:
    """A call of spec's functional with these lists, every list passed by its argument name."""
    fn = require_functional(spec)
    kwargs = dict(spec.functional_kwargs)

    def call() -> None:
        fn(params=params, grads=grads, **state, **kwargs)

    return call


def tensor_lists(spec: OptimSpec, params: list[Any]) -> dict[str, list[Any]]:
    """Fresh, valid state lists for ``params``."""
    return {name: [make_state(kind, p) for p in params] for name, kind in spec.state}


def step_with_grads(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: Any) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


# Hyperparameters a constructor may refuse: each is tried where the torch class takes that
# argument, and gradfuse must then do exactly what torch does (same exception type and message,
# or accept it too).
BAD_HYPERPARAMETERS: list[dict[str, Any]] = [
    {"lr": -1.0},
    {"lr": math.nan},
    {"lr": math.inf},
    {"lr": -math.inf},
    {"lr": torch.tensor([0.1, 0.2])},
    {"eps": -1e-8},
    {"eps": math.nan},
    {"weight_decay": -0.1},
    {"weight_decay": math.nan},
    {"momentum": -0.5},
    {"momentum": math.nan},
    {"dampening": -0.5},
    {"betas": (-0.1, 0.999)},
    {"betas": (0.9, 1.0)},
    {"betas": (1.0, 0.999)},
    {"betas": (math.nan, 0.999)},
    {"betas": (0.9, math.inf)},
    {"alpha": -0.1},
    {"alpha": math.nan},
    {"lr_decay": -0.1},
    {"initial_accumulator_value": -0.1},
    {"momentum_decay": -0.1},
    {"nesterov": True},
    {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
    {"fused": True, "foreach": True},
    {"differentiable": True, "fused": True},
]

# ---------------------------------------------------------------------------------------------
# Losses


@dataclass(frozen=True)
class LossSpec:
    """A loss: torch.nn.functional.<name>, gradfuse.nn.functional.<name>,
    gradfuse.functional.<name>_with_grad and gradfuse.nn.<module>."""

    name: str
    module: str
    kind: str  # "pointwise" (target like input), "logits" (BCE), "kl", "class" (CE/NLL)
    configs: tuple[dict[str, Any], ...]
    # Known differences from torch, found by these tests and not fixed yet: test key ("fuzz",
    # "bad:<case>") -> reason. Each becomes a strict xfail, so the test fails again (and the
    # entry must go) as soon as the difference is fixed.
    known: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name

    def marks(self, key: str) -> list[Any]:
        reason = self.known.get(key)
        return [pytest.mark.xfail(reason=reason, strict=True)] if reason else []

    def torch_fn(self) -> Callable[..., torch.Tensor]:
        fn: Callable[..., torch.Tensor] = getattr(torch.nn.functional, self.name)
        return fn

    def gf_fn(self) -> Any:
        nn = _gf_submodule("nn")
        return getattr(getattr(nn, "functional", None), self.name, None)

    def gf_with_grad(self) -> Any:
        return getattr(gradfuse.functional, f"{self.name}_with_grad", None)

    def require_fn(self) -> Any:
        return require(self.gf_fn(), f"gradfuse.nn.functional.{self.name}")

    def require_with_grad(self) -> Any:
        return require(self.gf_with_grad(), f"gradfuse.functional.{self.name}_with_grad")

    def make(
        self, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh random (input, target) of ``shape`` (for "class": (N, C) logits and N labels)."""
        x = torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype)
        if self.kind == "pointwise":
            return x, torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype)
        if self.kind == "logits":
            return x, torch.rand(shape, dtype=torch.float64, generator=gen).to(dtype)
        if self.kind == "kl":
            logp = torch.log_softmax(x.double(), -1).to(dtype)
            t = torch.softmax(torch.randn(shape, dtype=torch.float64, generator=gen), -1)
            return logp, t.to(dtype)
        n, c = shape[0], shape[-1] if len(shape) > 1 else 1
        if self.name == "nll_loss":
            x = torch.log_softmax(x.double(), -1).to(dtype)
        return x, torch.randint(0, c, (n,), generator=gen)


def _gf_submodule(name: str) -> Any:
    """``gradfuse.<name>``; an ImportError propagates (and fails the test)."""
    return importlib.import_module(f"gradfuse.{name}")


LOSSES: list[LossSpec] = [
    LossSpec(
        "mse_loss",
        "MSELoss",
        "pointwise",
        ({}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
    LossSpec(
        "l1_loss",
        "L1Loss",
        "pointwise",
        ({}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
    LossSpec(
        "smooth_l1_loss",
        "SmoothL1Loss",
        "pointwise",
        ({}, {"beta": 0.5, "reduction": "sum"}, {"beta": 0.0}),
    ),
    LossSpec(
        "huber_loss",
        "HuberLoss",
        "pointwise",
        ({}, {"delta": 0.5, "reduction": "sum"}, {"delta": 2.0, "reduction": "none"}),
    ),
    LossSpec(
        "binary_cross_entropy_with_logits",
        "BCEWithLogitsLoss",
        "logits",
        ({}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
    LossSpec(
        "kl_div",
        "KLDivLoss",
        "kl",
        ({"reduction": "batchmean"}, {"reduction": "sum"}, {"reduction": "none"}),
    ),
    LossSpec(
        "cross_entropy",
        "CrossEntropyLoss",
        "class",
        ({}, {"label_smoothing": 0.1, "reduction": "sum"}, {"ignore_index": 1}),
    ),
    LossSpec(
        "nll_loss",
        "NLLLoss",
        "class",
        ({}, {"reduction": "sum"}, {"ignore_index": 1}),
    ),
]


def loss_params(specs: Iterable[LossSpec] = LOSSES, *, all_configs: bool = False) -> list[Any]:
    out = []
    for s in specs:
        configs = s.configs if all_configs else s.configs[:1]
        for k, c in enumerate(configs):
            out.append(pytest.param(s, c, id=f"{s.name}-{k}"))
    return out


def loss_and_grad(spec: LossSpec, x: torch.Tensor, t: torch.Tensor, config: dict[str, Any]) -> Any:
    """gradfuse's loss and d(loss)/d(input) (the sum of the losses for reduction='none')."""
    loss, grad = spec.require_with_grad()(x, t, **config)
    return loss, grad


def torch_loss_and_grad(
    spec: LossSpec, x: torch.Tensor, t: torch.Tensor, config: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.detach().clone().requires_grad_(True)
    loss = spec.torch_fn()(xr, t, **config)
    loss.sum().backward() if loss.dim() else loss.backward()
    assert xr.grad is not None
    return loss.detach(), xr.grad
