"""The reference of block-wise 8-bit state (:mod:`gradfuse.optim._quant8`).

An 8-bit step is judged one step at a time. Its reference (torch's class, or this package's) runs
from gradfuse's params and its state as :func:`~gradfuse.optim.dequantize_state_dict` gives it,
with the same gradient: in float32, in float64, and once more in float64 per input (the params,
the gradient, each state tensor), that input moved up by one float32 epsilon. Each value
gradfuse produces may then be as far from the float64 one as ``LOW_PRECISION_FACTOR`` times the
float32 reference's own error, plus ``LOW_PRECISION_ULPS`` float32 epsilons of the value, plus
``LOW_PRECISION_FACTOR`` times the sum of how far the float64 result moved with each input
(``gradfuse._tolerances``). The last term is the problem's own conditioning: an update that
cancels (``-g + wd * p``, ``mu * buf + g / avg``, ``p - lr * u``) is off by an ulp of its
operands in any float32 implementation, even where the float32 reference happened to round
well. So:

- the params (16-bit params: gradfuse's must lie between the allowed interval's ends rounded
  to the dtype, rounding being monotone);
- each block's new absmax, against the float64 state's block maximum;
- each new code: the value it stands for must be a nearest code (:func:`nearest_codes`) of a
  value within the allowance of the float64 state (gradfuse quantizes the float32 value it
  computed).

Starting each step from gradfuse's own state keeps the comparison exact over many steps: a value
a few ulps from a threshold may take the other code, and a trajectory compared as a whole would
carry that into every later step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gradfuse import _tolerances as tol


def nearest_codes(xn: Tensor, code: Tensor, signed: bool) -> Tensor:
    """The code gradfuse's quantizer gives each normalized value ``xn`` (``x / absmax``): the
    nearest value of the sorted map ``code``, distances in ``xn``'s dtype (float32, as
    bitsandbytes measures them), ties to the lower code, except that in the unsigned map a
    positive value nearest to code 0 takes code 1 (a positive second moment never becomes 0;
    ``src/cpu/quant8.h``, ``code_of``). The two codes around each value are the candidates: a
    farther code is never nearer, rounded distances being monotone too."""
    flat = xn.reshape(-1)
    values = code.to(flat.dtype)
    upper = torch.searchsorted(values, flat).clamp(1, values.numel() - 1)
    lower = upper - 1
    below, above = (flat - values[lower]).abs(), (flat - values[upper]).abs()
    out = torch.where(above < below, upper, lower)
    if not signed:
        out = torch.where((out == 0) & (flat > 0), 1, out)
    return out.view(xn.shape)


def _allowed(theirs: Tensor, reference: Tensor, moved: Tensor, change: Tensor) -> Tensor:
    """Per element, how far from the float64 ``reference`` a value may be: the tolerance
    table's low-precision rule (float32's own error ``theirs - reference``, and epsilons of the
    value and of its ``change`` this step, the update's own roundings being relative to it)
    plus the conditioning term ``moved`` (:func:`_moved`)."""
    eps = torch.finfo(torch.float32).eps
    return tol.LOW_PRECISION_FACTOR * (
        (theirs.double() - reference).abs() + moved
    ) + tol.LOW_PRECISION_ULPS * eps * (reference.abs() + change)


def _moved(reference: Tensor, *perturbed: Tensor) -> Tensor:
    """How far the float64 result moves when each input moves by one float32 epsilon: the sum
    over the runs that nudged one input each (the rules are elementwise, so that is the sum
    of each input's |derivative| times an epsilon of it, to first order)."""
    reference = reference.detach().double()
    return torch.stack([(x.detach().double() - reference).abs() for x in perturbed]).sum(0)


JUDGED = ("param", "absmax", "code")  # what compare_8bit_steps judges


@dataclass
class EightBitSteps:
    """What :func:`compare_8bit_steps` found, over all steps: for each of :data:`JUDGED`, the
    largest excess over what the rule allows (<= 0: all within), and where it was."""

    excess: dict[str, float] = field(default_factory=lambda: dict.fromkeys(JUDGED, -math.inf))
    worst: dict[str, str] = field(default_factory=dict)
    codes: int = 0  # how many codes were judged
    # gradfuse's params after each step and the float64 reference's, for reporting
    params: list[Tensor] = field(default_factory=list)
    params64: list[Tensor] = field(default_factory=list)

    def flat(self, which: str) -> Tensor:
        parts = [t.detach().double().reshape(-1) for t in getattr(self, which)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)

    def note(self, what: str, excess: Tensor, describe: Callable[[int], str]) -> None:
        """Keeps the largest of ``excess`` for ``what``; ``describe(i)`` says where it is."""
        if excess.numel() == 0:
            return
        i = int(excess.argmax())
        if float(excess[i]) > self.excess[what]:
            self.excess[what] = float(excess[i])
            if excess[i] > 0:
                self.worst[what] = describe(i)


def _float_state(
    optimizer: torch.optim.Optimizer, params: Sequence[Tensor], dtype: torch.dtype
) -> list[dict[str, Any]]:
    """Each param's state as ``dequantize_state_dict`` gives it, copied to the CPU, its
    tensors in ``dtype``; 0-dim ones (step counters, NAdam's mu_product) keep theirs, as torch keeps them
    float32 for any param dtype."""
    from gradfuse.optim import dequantize_state_dict

    ids = {id(p): i for i, p in enumerate(params)}
    raw = {ids[id(p)]: st for p, st in optimizer.state.items() if id(p) in ids}
    deq = dequantize_state_dict({"state": raw, "param_groups": []})["state"]
    return [
        {
            k: v.detach().to(
                "cpu", dtype if v.is_floating_point() and v.dim() else v.dtype, copy=True
            )
            if isinstance(v, Tensor)
            else v
            for k, v in deq.get(i, {}).items()
        }
        for i in range(len(params))
    ]


def _judge_params(
    found: EightBitSteps,
    ours: Tensor,
    p32: Tensor,
    p64: Tensor,
    moved: Tensor,
    start: Tensor,
    where: str,
) -> None:
    """Judges a param after a step (``start`` before it) into ``found``."""
    allowed = _allowed(p32, p64, moved, (p64 - start.double()).abs())
    found.params.append(ours.detach().clone())
    found.params64.append(p64.detach().clone())
    if ours.dtype == torch.float32:
        excess = (ours.double() - p64).abs() - allowed
    else:  # rounded once from a value within the allowance: between the ends rounded
        lo, hi = (p64 - allowed).to(ours.dtype), (p64 + allowed).to(ours.dtype)
        excess = torch.maximum(lo.double() - ours.double(), ours.double() - hi.double())
    excess = excess.reshape(-1)
    flat = ours.reshape(-1)
    found.note(
        "param",
        excess,
        lambda i: (
            f"{where}, element {i}: {float(flat[i]):.9g}, float64 {float(p64.reshape(-1)[i]):.9g}"
        ),
    )


def _judge_state(
    found: EightBitSteps,
    codes: Tensor,
    absmax: Tensor,
    x32: Tensor,
    x64: Tensor,
    moved: Sequence[Tensor],
    old: Tensor,
    signed: bool,
    where: str,
) -> None:
    """Judges one 8-bit state tensor after a step into ``found``: gradfuse's ``codes`` and
    ``absmax`` against the float32 (``x32``) and float64 (``x64``) references' new values,
    those of the float64 runs with one input nudged each (``moved``), and the value before the
    step (``old``)."""
    from gradfuse.optim import dynamic_map
    from gradfuse.optim._quant8 import BLOCK

    n = codes.numel()
    if n == 0:
        return
    x32, x64 = x32.detach().reshape(-1), x64.detach().reshape(-1)
    xs = [x.detach().reshape(-1) for x in moved]
    change = (x64.double() - old.detach().double().reshape(-1)).abs()

    def block_max(x: Tensor) -> Tensor:
        return torch.nn.functional.pad(x.abs(), (0, (-n) % BLOCK)).view(-1, BLOCK).amax(1)

    a64 = block_max(x64)
    a_allowed = _allowed(
        block_max(x32), a64, _moved(a64, *(block_max(x) for x in xs)), block_max(change)
    )
    found.note(
        "absmax",
        (absmax.double() - a64).abs() - a_allowed,
        lambda i: f"{where}, block {i}: absmax {float(absmax[i]):.9g}, float64 {a64[i]:.9g}",
    )
    # A block whose absmax is 0 holds zeros whatever its codes (bitsandbytes writes code 0 for
    # 0 / 0): its absmax is judged above, its codes are not.
    scale = absmax.double().repeat_interleave(BLOCK)[:n]
    kept = scale > 0
    c, scale = codes.reshape(-1)[kept].long(), scale[kept]
    found.codes += c.numel()
    # gradfuse picked the nearest code to its own x / absmax, at most delta from xn; so its
    # code is at most 2 delta farther from xn than xn's nearest code.
    xn = x64[kept] / scale
    delta = _allowed(x32[kept], x64[kept], _moved(x64, *xs)[kept], change[kept]) / scale
    code = dynamic_map(signed).double()
    excess = (code[c] - xn).abs() - (code[nearest_codes(xn, code, signed)] - xn).abs() - 2 * delta
    found.note(
        "code", excess, lambda i: f"{where}: code {int(c[i])} for x / absmax = {float(xn[i]):.9g}"
    )


_EPS32 = torch.finfo(torch.float32).eps


def _nudged(x: Tensor, direction: Tensor | None) -> Tensor:
    """A copy of ``x`` (times 1 + eps * direction): a step updates its inputs in place."""
    return x.clone() if direction is None else x * (1 + _EPS32 * direction)


@dataclass(frozen=True)
class _StepStart:
    """What a step of gradfuse's started from, and the state it stored after."""

    params: list[Tensor]  # gradfuse's params, as they were
    dtypes: list[torch.dtype]
    grads: Sequence[Tensor]
    before: dict[torch.dtype, list[dict[str, Any]]]  # the state dequantized, per dtype
    group_steps: list[Any]  # per param group: the step counted there (LAMB's), else None
    after: list[dict[str, Any]]  # the state it stored, dequantized to float64


def _reference(
    name: str,
    kwargs: dict[str, Any],
    at: _StepStart,
    dtype: torch.dtype,
    nudge: list[dict[str, Tensor]] | None = None,
) -> tuple[torch.optim.Optimizer, list[Tensor]]:
    """The reference of ``name``'s step from ``at``, in ``dtype``, each input times
    1 + eps * its direction in ``nudge``."""
    from gradfuse.testing import LAMB, reference_optimizer

    ds: list[dict[str, Tensor]] = nudge or [{} for _ in at.params]
    ref_params = [
        _nudged(p.to(dtype), d.get("param")).requires_grad_(True)
        for p, d in zip(at.params, ds, strict=True)
    ]
    ref = reference_optimizer(name, ref_params, **kwargs)
    for rp, pd, st, g, d in zip(ref_params, at.dtypes, at.before[dtype], at.grads, ds, strict=True):
        rp.grad = _nudged(g.to(pd).to(dtype), d.get("grad"))  # the gradient gradfuse saw
        if st:
            ref.state[rp] = {
                key: _nudged(v, d.get(key)) if isinstance(v, Tensor) else v for key, v in st.items()
            }
    for theirs, step in zip(ref.param_groups, at.group_steps, strict=True):
        if step is not None:
            theirs["step"] = step
    if isinstance(ref, LAMB):
        # LAMB's kernel computes u from its moments as stored (src/cpu/kernels/lamb.cpp).
        # Nudged as the state is: they are what u is computed from.
        ref.stored_moments = {
            rp: (
                _nudged(st["exp_avg"].to(dtype), d.get("exp_avg")),
                _nudged(st["exp_avg_sq"].to(dtype), d.get("exp_avg_sq")),
            )
            for rp, st, d in zip(ref_params, at.after, ds, strict=True)
            if "exp_avg" in st
        }
    ref.step()
    return ref, ref_params


def compare_8bit_steps(
    name: str,
    params: Sequence[Tensor],
    grads: Sequence[Sequence[Tensor]],
    *,
    min_8bit_size: int = 1,
    **kwargs: Any,
) -> EightBitSteps:
    """Steps ``gradfuse.optim.<name>8bit(params, min_8bit_size=..., **kwargs)`` once per entry
    of ``grads`` (a gradient per param), each step beside the references of ``name``
    (:func:`gradfuse.testing.reference_optimizer`) started from gradfuse's params and
    dequantized state; ``params`` (CPU or CUDA) are stepped in place, the references run on
    the CPU."""
    import gradfuse.optim as gopt
    from gradfuse.optim._quant8 import SIGNED_KEYS

    opt = getattr(gopt, f"{name}8bit")(params, min_8bit_size=min_8bit_size, **kwargs)
    found = EightBitSteps()
    for k, gs in enumerate(grads):
        start = [p.detach().to("cpu", copy=True) for p in params]
        before = {dt: _float_state(opt, params, dt) for dt in (torch.float32, torch.float64)}
        group_steps = [group.get("step") for group in opt.param_groups]
        for p, g in zip(params, gs, strict=True):
            p.grad = g.to(p.device, p.dtype, copy=True)
        opt.step()
        at = _StepStart(
            start,
            [p.dtype for p in params],
            [g.cpu() for g in gs],
            before,
            group_steps,
            _float_state(opt, params, torch.float64),
        )
        # One float64 run per input (the params, the gradient, each state tensor but the step
        # counters), that input moved up by one float32 epsilon.
        state_keys = {
            key
            for st in before[torch.float64]
            for key, v in st.items()
            if isinstance(v, Tensor) and v.dim()
        }
        up = [torch.ones((), dtype=torch.float64) for _ in params]
        nudged = [
            _reference(name, kwargs, at, torch.float64, [{key: u} for u in up])
            for key in ("param", "grad", *sorted(state_keys))
        ]
        (r32, ps32), (r64, ps64) = (
            _reference(name, kwargs, at, torch.float32),
            _reference(name, kwargs, at, torch.float64),
        )
        for i, p in enumerate(params):
            q32, q64 = ps32[i], ps64[i]
            where = f"step {k + 1}, param {i}"
            moved = _moved(q64, *(q[i] for _, q in nudged))
            _judge_params(
                found, p.detach().cpu(), q32.detach(), q64.detach(), moved, start[i], where
            )
            st = opt.state[p]
            for key, value in st.items():
                if isinstance(value, Tensor) and value.dtype == torch.uint8:
                    _judge_state(
                        found,
                        value.cpu(),
                        st[key + "_absmax"].cpu(),
                        r32.state[q32][key],
                        r64.state[q64][key],
                        [r.state[q[i]][key] for r, q in nudged],
                        before[torch.float64][i].get(key, torch.zeros(())),
                        SIGNED_KEYS[key],
                        f"{where} {key}",
                    )
    return found


def judge_8bit_steps(found: EightBitSteps) -> list[str]:
    """What is wrong with ``found``; [] if nothing is."""
    problems = [
        f"{what}: {found.excess[what]:.3g} beyond the allowance ({found.worst[what]})"
        for what in JUDGED
        if found.excess[what] > 0
    ]
    if found.codes == 0:
        problems.append("no 8-bit state was written")
    return problems
