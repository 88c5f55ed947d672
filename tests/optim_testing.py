"""Trajectory comparison shared by the optimizer tests: the same gradients fed to a gradfuse
optimizer and to torch's for-loop reference, compared with the tolerance table."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

import tolerances

OptimFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

# gradfuse's extensions of every optimizer's constructor (DESIGN.md §1: keyword-only, off by
# default), last of all: clipping, then the low-precision policies (issue 8). Written out here
# as (name, kind, default): the check of gradfuse's defaults, independent of the code.
EXTENSIONS = [
    ("max_grad_norm", inspect.Parameter.KEYWORD_ONLY, None),
    ("master_weights", inspect.Parameter.KEYWORD_ONLY, False),
    ("state_dtype", inspect.Parameter.KEYWORD_ONLY, None),
    ("rounding", inspect.Parameter.KEYWORD_ONLY, "nearest"),
    ("kahan", inspect.Parameter.KEYWORD_ONLY, False),
]

SIZES = (1, 7, 4097, 0)  # odd sizes, and an empty tensor, all in one multi-tensor call

# Every 8-bit optimizer (gradfuse.optim.<name>8bit) and options that reach its branches: the
# configurations compare_8bit_steps judges on the CPU (test_8bit.py) and on CUDA
# (test_8bit_cuda.py). Muon8bit has tests of its own (its params come out of a matrix iteration).
EIGHT_BIT = [
    ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    ("Adam", {"amsgrad": True, "maximize": True}),
    ("Adamax", {"lr": 2e-3, "weight_decay": 0.1}),
    ("NAdam", {"decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("RAdam", {"weight_decay": 0.1}),
    ("Adagrad", {"lr": 1e-2, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    ("RMSprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    ("RMSprop", {"alpha": 0.9}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9, "dampening": 0.5, "maximize": True}),
    ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
    ("ADOPT", {"weight_decay": 0.1, "weight_decouple": True}),
    ("AdEMAMix", {"t_alpha": 5, "t_beta3": 5, "weight_decay": 0.1}),
    # LAMB without clipping (bench/cases/adamw8bit.py says why); u from the stored moments.
    ("LAMB", {"weight_decay": 0.01, "max_grad_norm": 0.0}),
    ("LAMB", {"adam_w_mode": False, "weight_decay": 0.01, "max_grad_norm": 0.0}),
]


def make_params(
    shapes: Sequence[tuple[int, ...] | int], dtype: torch.dtype, device: str = "cpu"
) -> list[torch.Tensor]:
    return [torch.randn(s, dtype=torch.float64).to(dtype=dtype, device=device) for s in shapes]


def run_trajectory(
    make_opt: OptimFactory,
    params: list[torch.Tensor],
    grads: list[list[torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Step an optimizer over fixed gradient sequences; returns the final params."""
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    opt = make_opt(ps)
    for step_grads in grads:
        for p, g in zip(ps, step_grads, strict=True):
            p.grad = g.to(p.dtype).clone()
        opt.step()
    return [p.detach() for p in ps], opt


def random_grads(
    params: list[torch.Tensor], steps: int, dtype: torch.dtype | None = None
) -> list[list[torch.Tensor]]:
    dt = dtype or params[0].dtype
    return [
        [torch.randn(p.shape, dtype=torch.float64).to(dtype=dt, device=p.device) for p in params]
        for _ in range(steps)
    ]


def compare_with_torch(
    ours: OptimFactory,
    theirs: OptimFactory,
    dtype: torch.dtype,
    *,
    shapes: Sequence[tuple[int, ...] | int] = SIZES,
    steps: int = 50,
    device: str = "cpu",
    msg: str = "",
) -> None:
    """Run both optimizers over the same gradients and check the DESIGN.md §7 contract."""
    params = make_params(shapes, dtype, device)
    grads = random_grads(params, steps)
    got, _ = run_trajectory(ours, params, grads)
    if dtype in tolerances.LOW_PRECISION_DTYPES:
        # torch in the same precision, and torch in float64 from the same start and gradients.
        same, _ = run_trajectory(theirs, params, grads)
        ref, _ = run_trajectory(
            theirs,
            [p.double() for p in params],
            [[g.double() for g in gs] for gs in grads],
        )
        for i, (a, b, r) in enumerate(zip(got, same, ref, strict=True)):
            tolerances.assert_low_precision(a, b, r, msg=f"{msg} param {i}")
    else:
        want, _ = run_trajectory(theirs, params, grads)
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            tolerances.assert_close(a, b, tolerances.TRAJECTORY[dtype], msg=f"{msg} param {i}")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor (NaN-safe, sign-of-zero-safe equality)."""
    c = t.detach().contiguous()
    return c.view(torch.uint8) if c.numel() else c


def snapshot(tensors: Sequence[Any]) -> list[Any]:
    """Bitwise copies, to prove a failed call wrote nothing."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
        elif isinstance(t, torch.Tensor):
            out.append(t.detach().clone())
        else:
            out.append(t.copy())
    return out


def assert_unchanged(before: Sequence[Any], after: Sequence[Any]) -> None:
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if a is None:
            assert b is None
            continue
        if isinstance(a, torch.Tensor):
            assert torch.equal(_bits(a), _bits(b)), f"tensor {i} changed"
        else:
            assert a.tobytes() == b.tobytes(), f"array {i} changed"


# --- the precision-policy tests' fixtures (LAMB, Adafactor, Muon) ---------------------------


def seeded_tensors(shapes: Sequence[tuple[int, ...]], seed: int = 0) -> list[torch.Tensor]:
    """float32 normals of these shapes from their own generator."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen) for s in shapes]


def seeded_grads(
    shapes: Sequence[tuple[int, ...]], steps: int, seed: int = 1
) -> list[list[torch.Tensor]]:
    """One list of float32 gradients per step, from their own generator."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]


def leaves(start: Sequence[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """Fresh leaf params in ``dtype`` from the same starting values."""
    return [s.to(dtype).clone().requires_grad_(True) for s in start]


def step_with(opt: torch.optim.Optimizer, params: Sequence[torch.Tensor], grads: Any) -> None:
    """One step of ``opt`` with these gradients (cast to each param's dtype)."""
    for p, g in zip(params, grads, strict=True):
        p.grad = g.to(p.dtype).clone()
    opt.step()


def assert_same_state(
    opt: torch.optim.Optimizer,
    params: Sequence[torch.Tensor],
    other: torch.optim.Optimizer,
    other_params: Sequence[torch.Tensor],
) -> None:
    """Both optimizers hold the same state, key for key, dtype and bits (a checkpoint loaded)."""
    for p, q in zip(params, other_params, strict=True):
        assert opt.state[p].keys() == other.state[q].keys()
        for k, v in opt.state[p].items():
            assert v.dtype == other.state[q][k].dtype, k
            assert torch.equal(v, other.state[q][k]), k


def stochastic_checkpoint_runs(
    make: Callable[..., torch.optim.Optimizer],
    start: Sequence[torch.Tensor],
    grads: Sequence[Any],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """bfloat16 params from ``start`` with ``make(params, rounding="stochastic")``: two steps,
    a state_dict (which carries the rounding seed), a second optimizer loaded from it, and the
    remaining steps in both, which must give the same bits. Returns the stochastic run's params
    and those of a nearest-rounded run (``make(params)``) over all the steps, for the caller to
    check that the bits really are random."""
    torch.manual_seed(1)
    params = leaves(start, torch.bfloat16)
    opt = make(params, rounding="stochastic")
    for gs in grads[:2]:
        step_with(opt, params, gs)
    sd = copy.deepcopy(opt.state_dict())
    assert "gradfuse_low_precision" in sd
    other = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = make(other, rounding="stochastic")
    opt2.load_state_dict(sd)
    for gs in grads[2:]:
        step_with(opt, params, gs)
        step_with(opt2, other, gs)
    assert all(torch.equal(p, q) for p, q in zip(params, other, strict=True))
    nearest = leaves(start, torch.bfloat16)
    plain = make(nearest)
    for gs in grads:
        step_with(plain, nearest, gs)
    return params, nearest


def unchanged(tensors: Sequence[torch.Tensor]) -> Callable[[], bool]:
    """A check, for later, that ``tensors`` still hold the values they hold now."""
    saved = [t.clone() for t in tensors]
    return lambda: all(torch.equal(a, b) for a, b in zip(tensors, saved, strict=True))


def assert_policy_refusals(
    cls: type[torch.optim.Optimizer],
    shape: tuple[int, ...],
    eight_bit: type[torch.optim.Optimizer] | None = None,
) -> None:
    """The precision-policy refusals every optimizer shares, each naming its option: Kahan and
    stochastic rounding need bfloat16 params, no bfloat16 state for float64 params, master
    weights not with Kahan; with ``eight_bit`` (its 8-bit class) no 8-bit state for float64
    params and no other state_dtype for the 8-bit class."""
    f32 = [torch.randn(shape, requires_grad=True)]
    f64 = [torch.randn(shape, dtype=torch.float64, requires_grad=True)]
    with pytest.raises(ValueError, match=r"kahan=True needs bfloat16 params"):
        cls(f32, kahan=True)
    with pytest.raises(ValueError, match=r"rounding='stochastic' needs bfloat16 params"):
        cls(f32, rounding="stochastic")
    with pytest.raises(ValueError, match=r"state_dtype=torch.bfloat16 is not available"):
        cls(f64, state_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cannot be combined"):
        cls(f32, master_weights=True, kahan=True)
    if eight_bit is not None:
        with pytest.raises(ValueError, match=r"state_dtype=torch.uint8 \(8-bit state\) needs"):
            eight_bit(f64)
        with pytest.raises(TypeError, match=r"state_dtype is torch\.uint8"):
            eight_bit(f32, state_dtype=torch.float32)


# ---- a CUDA kernel against the CPU's -----------------------------------------------------------
# The CUDA kernels run the CPU engine's per-element rules, but nvcc contracts multiply-adds that
# the CPU build keeps apart, and reductions (LAMB's norms) add in another order: a float32 result
# may be an ulp away from the CPU's. Rounded to a 16-bit dtype or to an 8-bit code, that ulp moves
# the stored value to the neighbouring one where it sat on a boundary: for a few elements in a
# thousand. These helpers allow exactly that and judge the rest tightly.


# The storage policies a CUDA kernel is checked under against the CPU kernel: (param dtype,
# options), every policy and state dtype the precision rules allow.
CUDA_STORAGES = [
    (torch.float32, {"state_dtype": torch.bfloat16}),
    (torch.bfloat16, {"master_weights": True}),
    (torch.float16, {"master_weights": True, "state_dtype": torch.float32}),
    (torch.bfloat16, {"state_dtype": torch.float32}),
    (torch.bfloat16, {"rounding": "stochastic"}),
    (torch.bfloat16, {"kahan": True}),
]


def stepped_on(
    cls: Callable[..., torch.optim.Optimizer],
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    device: str,
    state: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """``cls(params, **kwargs)`` over copies of ``start`` on ``device`` (from ``state``, a
    ``state_dict``, where given), stepped once per entry of ``grads``."""
    params = [p.to(device, copy=True).requires_grad_(True) for p in start]
    opt = cls(params, **kwargs)
    if state is not None:
        opt.load_state_dict(copy.deepcopy(state))
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = g.to(device, p.dtype)
        opt.step()
    return params, opt


def on_both(
    cls: Callable[..., torch.optim.Optimizer],
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    state: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer, list[torch.Tensor], torch.optim.Optimizer]:
    """The same steps (:func:`stepped_on`) on CUDA and on the CPU: ``(ours, opt_cuda, theirs,
    opt_cpu)``."""
    ours, opt_cuda = stepped_on(cls, start, grads, "cuda", state, **kwargs)
    theirs, opt_cpu = stepped_on(cls, start, grads, "cpu", state, **kwargs)
    return ours, opt_cuda, theirs, opt_cpu


def last_step_on_both(
    cls: Callable[..., torch.optim.Optimizer],
    start: Sequence[torch.Tensor],
    grads: Sequence[Sequence[torch.Tensor]],
    **kwargs: Any,
) -> tuple[
    list[torch.Tensor],
    dict[str, Any],
    list[torch.Tensor],
    torch.optim.Optimizer,
    list[torch.Tensor],
    torch.optim.Optimizer,
]:
    """All but the last of ``grads`` stepped on the CPU; from there the last step on CUDA and on
    the CPU (:func:`on_both`). Returns the params before it, the ``state_dict`` before it, and
    :func:`on_both`'s four."""
    params, opt = stepped_on(cls, start, grads[:-1], "cpu", **kwargs)
    state = opt.state_dict()
    before = [p.detach().clone() for p in params]
    return before, state, *on_both(cls, before, grads[-1:], state, **kwargs)


def _few(flipped: torch.Tensor, what: str) -> None:
    """At most 2 in a thousand (one, in a tensor of fewer than 500)."""
    assert int(flipped.sum()) <= max(1, int(2e-3 * flipped.numel())), what


def assert_codes_agree(ours: torch.Tensor, cpu: torch.Tensor, what: str) -> None:
    """8-bit codes: the CPU's, but for a few neighbouring ones."""
    assert ours.dtype == torch.uint8, what
    assert ours.shape == cpu.shape, what
    diff = (ours.cpu().int() - cpu.int()).abs()
    if diff.numel():
        assert diff.max().item() <= 1, what
        _few(diff != 0, what)


def assert_like_cpu(ours: torch.Tensor, cpu: torch.Tensor, what: str) -> None:
    """float32 (or float64) values: the CPU's to rounding; 16-bit ones: the CPU's, but for a
    few one ulp away."""
    assert ours.dtype == cpu.dtype, what
    ours = ours.detach().cpu()
    cpu = cpu.detach()
    if cpu.dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(ours, cpu, rtol=1e-5, atol=1e-6, msg=what)
        return
    diff = (ours.double() - cpu.double()).abs()
    ulp = cpu.double().abs() * torch.finfo(cpu.dtype).eps + torch.finfo(cpu.dtype).tiny
    assert (diff <= ulp).all(), what
    _few(diff != 0, what)


def assert_params_like_cpu(ours: Sequence[torch.Tensor], cpu: Sequence[torch.Tensor]) -> None:
    for i, (p, q) in enumerate(zip(ours, cpu, strict=True)):
        assert p.is_cuda, i
        assert_like_cpu(p, q, f"param {i}")


def assert_state_like_cpu(
    opt_cuda: torch.optim.Optimizer, opt_cpu: torch.optim.Optimizer, skip: Sequence[str] = ()
) -> None:
    """Every state tensor of ``opt_cuda`` (CUDA params) like ``opt_cpu``'s (the same params on
    the CPU, the same steps), but the keys in ``skip`` (the caller judges them)."""
    for (p, st), (q, ref) in zip(opt_cuda.state.items(), opt_cpu.state.items(), strict=True):
        assert p.is_cuda
        assert not q.is_cuda
        for key, value in st.items():
            want = ref[key]
            if key in skip:
                continue
            if not isinstance(value, torch.Tensor):
                assert value == want, key
            elif key == "kahan_comp":
                # Where the param rounded the other way, its compensation moved by the same
                # bfloat16 ulp the other way: the two sum to the same value, to the
                # compensation's own precision.
                ours = p.detach().cpu().double() + value.cpu().double()
                theirs = q.detach().double() + want.double()
                assert ((ours - theirs).abs() <= theirs.abs() * 2**-14 + 1e-30).all(), key
            elif value.dtype == torch.uint8:
                assert_codes_agree(value, want, key)
            elif key.endswith("_absmax"):
                torch.testing.assert_close(value.cpu(), want, rtol=1e-5, atol=0.0, msg=key)
            else:
                assert_like_cpu(value, want, key)


def assert_step_like_cpu(
    got: torch.Tensor, want: torch.Tensor, before: torch.Tensor, what: str, share: float = 0.05
) -> None:
    """For results that follow from state stored one rounding away from the CPU's (a
    neighbouring bfloat16 moment or 8-bit code, which assert_state_like_cpu allows: the
    optimizer's next step reads it): ``got`` within ``share`` of each element's CPU step
    (``want - before``) plus a fifth of that of the largest, plus one rounding of the dtype."""
    want_d, got_d = want.detach().double(), got.detach().cpu().double()
    step = (want_d - before.detach().double()).abs()
    allowed = share * step + (share / 5) * (step.max() if step.numel() else 0.0)
    allowed = allowed + want_d.abs() * torch.finfo(want.dtype).eps + 1e-30
    assert ((got_d - want_d).abs() <= allowed).all(), what
