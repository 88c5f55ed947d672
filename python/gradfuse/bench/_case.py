"""What a benchmark case is: an op, its sizes, its minimal bytes, and how each provider runs it.

A case file in :mod:`gradfuse.bench.cases` lists ``CASES``: instances of
:class:`OptimizerCase` (a ``torch.optim``-style optimizer step), :class:`FunctionCase` (an
in-place function over the gradients, such as ``clip_grad_norm_``) or :class:`LossCase` (a
loss forward + its input gradient). The same objects drive ``gradfuse bench`` (speed) and
``gradfuse check`` (correctness against torch).

Every case names the gradfuse symbol it exercises (``"gradfuse.optim.AdamW"``); a build
without that symbol reports the case as "not available in this build" instead of failing.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from gradfuse.bench._timing import MIN_SAMPLE_S
from gradfuse.bench.cases import MIN_ACCESSES

if TYPE_CHECKING:
    import torch

OPTIMIZER_PROVIDERS = ("gradfuse", "torch-forloop", "torch-foreach", "torch-fused")
LOSS_PROVIDERS = ("gradfuse", "torch-eager")
COMPILE_PROVIDER = "torch-compile"
# heavyball: a torch.compile-based optimizer library, for the optimizers it has (Muon).
HEAVYBALL_PROVIDER = "heavyball"
ALL_PROVIDERS = (*OPTIMIZER_PROVIDERS, "torch-eager", COMPILE_PROVIDER, HEAVYBALL_PROVIDER)

Step = Callable[[], object]
Shape = tuple[int, ...]


class Unavailable(Exception):
    """A provider (or case) cannot run here; the message says why, for the report."""


# The reason for torch-fused on an optimizer torch has no fused step for (RAdam, RMSprop, ...):
# the same words for every such case, so that the report writes it once, under the table.
NO_TORCH_FUSED = "torch has no fused implementation"


@dataclass(frozen=True)
class Size:
    """One workload: a name for the table and the tensor shapes it is made of."""

    name: str
    shapes: tuple[Shape, ...]
    note: str = ""

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)


def transformer_shapes(d: int, layers: int, vocab: int, ctx: int) -> tuple[Shape, ...]:
    """The parameter shapes of a GPT-2-style transformer: token and position embeddings, per
    layer two layer norms, fused qkv, attention out, MLP in/out (weights and biases), and a
    final layer norm; the output head is tied to the embeddings. 2 + 12 layers + 2 tensors."""
    shapes: list[Shape] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [
            (d,),
            (d,),  # ln_1
            (3 * d, d),
            (3 * d,),  # attn.c_attn
            (d, d),
            (d,),  # attn.c_proj
            (d,),
            (d,),  # ln_2
            (4 * d, d),
            (4 * d,),  # mlp.c_fc
            (d, 4 * d),
            (d,),  # mlp.c_proj
        ]
    shapes += [(d,), (d,)]  # ln_f
    return tuple(shapes)


def _model_size(name: str, d: int, layers: int, vocab: int, ctx: int) -> Size:
    shapes = transformer_shapes(d, layers, vocab, ctx)
    numel = sum(math.prod(s) for s in shapes)
    note = (
        f"GPT-style {layers} layers, d={d}, vocab {vocab}, ctx {ctx}: "
        f"{len(shapes)} tensors, {numel / 1e6:.1f}M params"
    )
    return Size(name, shapes, note)


MODEL = _model_size("model", d=384, layers=12, vocab=8192, ctx=512)
MODEL_SMALL = _model_size("model-small", d=128, layers=12, vocab=2048, ctx=256)
ONE_16M = Size("16M", ((1 << 24,),), "one tensor of 2^24 elements")
ONE_2M = Size("2M", ((1 << 21,),), "one tensor of 2^21 elements")
# Host time: a step over many tiny tensors costs only its Python and argument checks, so this
# size measures what an optimizer costs the host per step (issue 14), not its memory traffic.
HOST = Size("host", ((256,),) * 300, "300 tensors of 256 elements: the step is all host time")

_COUNT = re.compile(r"^(\d+)([kKmMgG]?)$")
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_count(token: str) -> int | None:
    """``"16M"`` -> 2^24, ``"4097"`` -> 4097; None if ``token`` is not a count."""
    m = _COUNT.match(token.strip())
    if not m:
        return None
    return int(m.group(1)) * _MULT[m.group(2).lower()]


def resolve(path: str) -> Any:
    """The object at dotted ``path`` (``"gradfuse.optim.AdamW"``), or None when this build
    does not have it. An import error from inside an existing module is a real bug: re-raised."""
    module, _, attr = path.rpartition(".")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return None
        raise
    return getattr(mod, attr, None)


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {
        "float32": torch.float32,
        "float64": torch.float64,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[name]


def _randn(shape: Shape, gen: torch.Generator, scale: float = 1.0, shift: float = 0.0) -> Any:
    import torch

    t = torch.randn(shape, generator=gen, dtype=torch.float32)
    if scale != 1.0:
        t.mul_(scale)
    if shift != 0.0:
        t.add_(shift)
    return t


@dataclass
class Runner:
    """What a provider built for one case: ``calls[i]()`` runs one step on rotation copy i."""

    calls: list[Step]
    label: str = ""

    def __call__(self, i: int) -> None:
        self.calls[i % len(self.calls)]()


@dataclass
class Case:
    """Fields every case has. Subclasses say how inputs are made and providers run."""

    name: str
    bytes_key: str  # row of cases.MIN_ACCESSES
    symbol: str = ""  # the gradfuse object it exercises, e.g. "gradfuse.optim.AdamW"
    kind: str = "optimizer"  # "optimizer", "function" (clip_grad_norm_) or "loss"
    description: str = ""
    module: str = ""  # the cases/ file it came from (set by the registry)

    def unavailable(self) -> str | None:
        """Why this case cannot run in this build (None: it can)."""
        if resolve(self.symbol) is None:
            return f"{self.symbol} is not available in this build"
        return None

    def min_bytes(self, size: Size, itemsize: int) -> int:
        return MIN_ACCESSES[self.bytes_key][0] * itemsize * size.numel

    def providers(self, compile: bool) -> tuple[str, ...]:
        base = OPTIMIZER_PROVIDERS if self.kind != "loss" else LOSS_PROVIDERS
        return (*base, COMPILE_PROVIDER) if compile else base

    def sample_seconds(self) -> float:
        """How long one timed sample lasts at least (back-to-back calls)."""
        return MIN_SAMPLE_S

    def sizes(self, quick: bool) -> list[Size]:
        raise NotImplementedError

    def parse_size(self, token: str) -> Size | None:
        """A size from ``--sizes`` that is not one of the named ones (e.g. ``"4097"``)."""
        n = parse_count(token)
        return Size(token, ((n,),)) if n is not None else None

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Optimizers


_INPUTS: dict[tuple[Any, ...], Any] = {}


def clear_inputs() -> None:
    """Drop the inputs shared by the providers of one case (called between cases)."""
    _INPUTS.clear()


def _optimizer_inputs(
    shapes: Sequence[Shape], dtype: str, device: str, seed: int
) -> tuple[list[Any], list[Any]]:
    """Fresh random params (around 0, std 1) and grads (std 1): never zeros. Made once per
    case and copy; each provider then clones its own (``_leaves``)."""
    key = ("optim", tuple(shapes), dtype, device, seed)
    if key not in _INPUTS:
        _INPUTS[key] = _make_optimizer_inputs(shapes, dtype, device, seed)
    return _INPUTS[key]  # type: ignore[no-any-return]


def _make_optimizer_inputs(
    shapes: Sequence[Shape], dtype: str, device: str, seed: int
) -> tuple[list[Any], list[Any]]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    dt = torch_dtype(dtype)
    params = [_randn(s, gen).to(device=device, dtype=dt) for s in shapes]
    grads = [_randn(s, gen).to(device=device, dtype=dt) for s in shapes]
    return params, grads


def _leaves(params: Sequence[Any], grads: Sequence[Any], *, clone_grads: bool) -> list[Any]:
    """The provider's own params (state is per provider). Optimizers only read gradients, so
    their providers may share one set; a function that writes them (clip_grad_norm_) may not."""
    out = []
    for p, g in zip(params, grads, strict=True):
        q = p.detach().clone().requires_grad_(True)
        q.grad = g.detach().clone() if clone_grads else g.detach()
        out.append(q)
    return out


def with_grads(opt: Any, params: list[Any], grads: list[Any]) -> Step:
    """``opt``'s step for an optimizer whose step consumes the gradients (heavyball's sets
    ``p.grad`` to None): the step first gives them back (a Python attribute store per param, no
    copy, as a training loop's backward would), or every step after the first does nothing."""

    def step() -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()

    return step


@dataclass
class OptimizerCase(Case):
    """One step of ``gradfuse.optim.<optimizer>(params, **kwargs)`` against the torch class
    of the same name (``torch_factory`` for optimizers torch lacks, e.g. Lion).

    ``max_grad_norm`` set: gradfuse clips inside its step (``max_grad_norm=`` keyword) and
    torch runs ``torch.nn.utils.clip_grad_norm_`` before its step, the way users do it.
    """

    optimizer: str = "SGD"
    kwargs: dict[str, Any] = field(default_factory=dict)
    torch_factory: Callable[..., Any] | None = None  # (params, foreach=..., **kwargs)
    max_grad_norm: float | None = None
    check_configs: tuple[dict[str, Any], ...] = ({},)
    # ``gradfuse check`` of 8-bit state: (name, options) of ``gradfuse.optim.<name>8bit``, each
    # judged one step at a time against the float32 reference from the same dequantized state
    # (gradfuse.testing.compare_8bit_steps).
    check_8bit: tuple[tuple[str, dict[str, Any]], ...] = ()

    def __post_init__(self) -> None:
        if not self.symbol:
            self.symbol = f"gradfuse.optim.{self.optimizer}"

    # A keyword this case's class must take (a class of an older build may lack it), and how
    # the reason for its absence names it.
    needs_keyword: ClassVar[tuple[str, str] | None] = None

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        needs = (
            [("max_grad_norm", "max_grad_norm= keyword")] if self.max_grad_norm is not None else []
        )
        if self.needs_keyword is not None:
            needs.append(self.needs_keyword)
        if reason is None and needs:
            accepted = inspect.signature(resolve(self.symbol)).parameters
            for keyword, what in needs:
                if keyword not in accepted:
                    return f"{self.symbol} has no {what} in this build"
        return reason

    def sizes(self, quick: bool) -> list[Size]:
        return [ONE_2M, MODEL_SMALL, HOST] if quick else [ONE_16M, MODEL, HOST]

    def parse_size(self, token: str) -> Size | None:
        named = {s.name: s for s in (ONE_16M, ONE_2M, MODEL, MODEL_SMALL, HOST)}
        return named.get(token) or super().parse_size(token)

    def gradfuse_optimizer(self, params: list[Any], **extra: Any) -> Any:
        cls = resolve(self.symbol)
        kw = {**self.kwargs, **extra}
        if self.max_grad_norm is not None:
            kw["max_grad_norm"] = self.max_grad_norm
        return cls(params, **kw)

    def torch_optimizer(
        self, params: list[Any], *, foreach: bool, fused: bool, **extra: Any
    ) -> Any:
        import torch

        kw = {**self.kwargs, **extra}
        if self.torch_factory is not None:
            if fused:
                raise Unavailable(NO_TORCH_FUSED)
            return self.torch_factory(params, foreach=foreach, **kw)
        cls = getattr(torch.optim, self.optimizer)
        if fused:
            if "fused" not in inspect.signature(cls).parameters:
                # One reason for every case of every such optimizer: the report gives it one
                # note under the table instead of a row per case.
                raise Unavailable(NO_TORCH_FUSED)
            return cls(params, fused=True, **kw)
        return cls(params, foreach=foreach, **kw)

    def torch_step(self, opt: Any, params: list[Any], foreach: bool) -> Step:
        if self.max_grad_norm is None:
            return opt.step  # type: ignore[no-any-return]
        import torch

        max_norm = self.max_grad_norm

        def step() -> None:
            torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)
            opt.step()

        return step

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        # torch-side clipping writes the grads: then each provider gets its own.
        clone_grads = self.max_grad_norm is not None
        inputs = _param_copies(size, dtype, device, copies, seed, clone_grads=clone_grads)
        return Runner([self._step_of(provider, params) for params in inputs])

    def _step_of(self, provider: str, params: list[Any]) -> Step:
        import torch

        if provider == "gradfuse":
            return self.gradfuse_optimizer(params).step  # type: ignore[no-any-return]
        if provider in ("torch-forloop", "torch-foreach", "torch-fused"):
            foreach = provider == "torch-foreach"
            fused = provider == "torch-fused"
            try:
                opt = self.torch_optimizer(params, foreach=foreach, fused=fused)
            except (RuntimeError, ValueError, TypeError) as exc:
                raise Unavailable(f"{provider}: {exc}") from None
            return self.torch_step(opt, params, foreach=foreach or fused)
        if provider == COMPILE_PROVIDER:
            opt = self.torch_optimizer(params, foreach=False, fused=False)
            return torch.compile(self.torch_step(opt, params, foreach=False))
        raise Unavailable(f"{provider} does not apply to optimizers")


#: A row of :func:`optimizer_cases`: case name, its row of ``MIN_ACCESSES``, the
#: ``gradfuse.optim`` class, the benchmarked keyword arguments, and the option sets ``gradfuse
#: check`` compares (empty: another row of the same optimizer checks them).
OptimizerRow = tuple[str, str, str, dict[str, Any], tuple[dict[str, Any], ...]]


def optimizer_cases(
    rows: Sequence[OptimizerRow],
    torch_factory: Callable[..., Any] | None = None,
    against: str = "",
) -> list[OptimizerCase]:
    """One :class:`OptimizerCase` per row, described as the call it times (``Name(k=v, ...)``)
    and, with ``torch_factory`` (an optimizer torch lacks), ``against``: what the torch
    providers run instead."""
    return [
        OptimizerCase(
            name,
            key,
            optimizer=optimizer,
            kwargs=kwargs,
            torch_factory=torch_factory,
            description=f"{optimizer}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
            + (f"; torch: {against}" if against else ""),
            check_configs=checks,
        )
        for name, key, optimizer, kwargs, checks in rows
    ]


@dataclass
class FunctionCase(Case):
    """An in-place function over a list of gradients (``gradfuse.clip_grad_norm_``) against
    torch's function (``torch_function`` with ``foreach=False`` / ``True``)."""

    torch_function: str = "torch.nn.utils.clip_grad_norm_"
    kwargs: dict[str, Any] = field(default_factory=dict)
    check_configs: tuple[dict[str, Any], ...] = ({},)

    def sizes(self, quick: bool) -> list[Size]:
        return [ONE_2M, MODEL_SMALL, HOST] if quick else [ONE_16M, MODEL, HOST]

    def parse_size(self, token: str) -> Size | None:
        named = {s.name: s for s in (ONE_16M, ONE_2M, MODEL, MODEL_SMALL, HOST)}
        return named.get(token) or super().parse_size(token)

    def providers(self, compile: bool) -> tuple[str, ...]:
        base = ("gradfuse", "torch-forloop", "torch-foreach")
        return (*base, COMPILE_PROVIDER) if compile else base

    def call(self, provider: str, params: list[Any], **extra: Any) -> Any:
        kw = {**self.kwargs, **extra}
        if provider == "gradfuse":
            return resolve(self.symbol)(params, **kw)
        fn = resolve(self.torch_function)
        return fn(params, foreach=provider == "torch-foreach", **kw)

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        import torch

        wrap: Callable[[Any], Any]
        if provider == COMPILE_PROVIDER:
            wrap, provider = torch.compile, "torch-forloop"
        elif provider in self.providers(False):
            wrap = _unchanged
        else:
            raise Unavailable(f"{provider} does not apply to {self.name}")
        inputs = _param_copies(size, dtype, device, copies, seed, clone_grads=True)
        return Runner([wrap(functools.partial(self.call, provider, params)) for params in inputs])


def _param_copies(
    size: Size, dtype: str, device: str, copies: int, seed: int, *, clone_grads: bool
) -> list[list[Any]]:
    """``copies`` independent param lists (leaves with their gradients) of ``size``."""
    out = []
    for c in range(copies):
        params0, grads0 = _optimizer_inputs(size.shapes, dtype, device, seed + c)
        out.append(_leaves(params0, grads0, clone_grads=clone_grads))
    return out


def _unchanged(step: Step) -> Step:
    return step


# --------------------------------------------------------------------------------------------
# Losses

InputMaker = Callable[[Shape, "torch.Generator"], tuple[Any, Any]]


def regression_inputs(shape: Shape, gen: torch.Generator) -> tuple[Any, Any]:
    """Input and target: both standard normal, so |input - target| spans both sides of any
    Huber / smooth-L1 threshold near 1."""
    return _randn(shape, gen), _randn(shape, gen)


def logits_and_classes(shape: Shape, gen: torch.Generator) -> tuple[Any, Any]:
    """Logits (N, C) ~ 2·N(0, 1) and class indices in [0, C)."""
    import torch

    n, c = shape[0], shape[1]
    return _randn(shape, gen, scale=2.0), torch.randint(0, c, (n,), generator=gen)


def class_weight(shape: Shape, gen: torch.Generator) -> Any:
    """A per-class ``weight`` for inputs of shape (N, C): C values in [0.5, 1.5)."""
    import torch

    return torch.rand(shape[1:2], generator=gen) + 0.5


def log_probs_and_classes(shape: Shape, gen: torch.Generator) -> tuple[Any, Any]:
    """Log-probabilities (N, C) (log_softmax of random logits) and class indices."""
    x, t = logits_and_classes(shape, gen)
    return x.log_softmax(-1), t


def logits_and_probs(shape: Shape, gen: torch.Generator) -> tuple[Any, Any]:
    """Logits ~ N(0, 1) and targets in (0, 1) (binary cross-entropy with logits)."""
    import torch

    return _randn(shape, gen), torch.rand(shape, generator=gen)


def log_probs_and_probs(shape: Shape, gen: torch.Generator) -> tuple[Any, Any]:
    """KL divergence inputs: log-probabilities and a probability target, rows of (N, C)."""
    x = _randn(shape, gen).log_softmax(-1)
    t = _randn(shape, gen).softmax(-1)
    return x, t


@dataclass
class LossCase(Case):
    """``gradfuse.nn.functional.<function>(input, target, **kwargs)`` and the gradient with
    respect to ``input`` (``torch.autograd.grad``), against ``torch.nn.functional.<function>``
    the same way. The timed call is what a training step does: forward, then backward."""

    function: str = "mse_loss"
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: InputMaker = regression_inputs
    default_sizes: tuple[Size, ...] = (ONE_16M,)
    quick_sizes: tuple[Size, ...] = (ONE_2M,)
    two_d: bool = False  # sizes are (N, C): ``--sizes 4096x32000``
    check_shapes: tuple[Shape, ...] = ((1,), (7,), (4097,), (33, 17))
    check_configs: tuple[dict[str, Any], ...] = ({},)

    def __post_init__(self) -> None:
        self.kind = "loss"
        if not self.symbol:
            self.symbol = f"gradfuse.nn.functional.{self.function}"

    def sizes(self, quick: bool) -> list[Size]:
        return list(self.quick_sizes if quick else self.default_sizes)

    def parse_size(self, token: str) -> Size | None:
        named = {s.name: s for s in (*self.default_sizes, *self.quick_sizes)}
        if token in named:
            return named[token]
        m = re.match(r"^(\d+)x(\d+)$", token)
        if m:
            return Size(token, ((int(m.group(1)), int(m.group(2))),))
        n = parse_count(token)
        if n is None:
            return None
        if self.two_d:
            return None
        return Size(token, ((n,),))

    def make_inputs(self, shape: Shape, dtype: str, device: str, seed: int) -> tuple[Any, Any]:
        import torch

        gen = torch.Generator().manual_seed(seed)
        x, t = self.inputs(shape, gen)
        dt = torch_dtype(dtype)
        x = x.to(device=device, dtype=dt)
        t = t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device)
        return x, t

    def loss_function(self, provider: str) -> Callable[..., Any]:
        if provider == "gradfuse":
            fn = resolve(self.symbol)
            assert fn is not None
            return fn  # type: ignore[no-any-return]
        import torch

        return getattr(torch.nn.functional, self.function)  # type: ignore[no-any-return]

    def build(
        self, provider: str, size: Size, dtype: str, device: str, copies: int, seed: int
    ) -> Runner:
        import torch

        if provider not in self.providers(True):
            raise Unavailable(f"{provider} does not apply to losses")
        fn = self.loss_function(provider)
        if provider == COMPILE_PROVIDER:
            fn = torch.compile(fn)
        kw = dict(self.kwargs)
        calls: list[Step] = []
        for c in range(copies):
            key = ("loss", self.name, size.shapes[0], dtype, device, seed + c)
            if key not in _INPUTS:
                _INPUTS[key] = self.make_inputs(size.shapes[0], dtype, device, seed + c)
            x0, t = _INPUTS[key]
            x = x0.detach().clone().requires_grad_(True)  # each provider its own copy

            def call(x: Any = x, t: Any = t) -> None:
                loss = fn(x, t, **kw)
                torch.autograd.grad(loss, x)

            calls.append(call)
        return Runner(calls)
