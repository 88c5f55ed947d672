"""The reference of block-wise 8-bit state (:mod:`gradfuse.optim._quant8`).

An 8-bit step is judged one step at a time. Its reference (torch's class, or this package's) runs
twice from gradfuse's params and its state as :func:`~gradfuse.optim.dequantize_state_dict`
gives it, in float32 and in float64, with the same gradient. By the tolerance table's
low-precision rule (``gradfuse._tolerances``: at most ``LOW_PRECISION_FACTOR`` times the float32
reference's own error against float64, plus ``LOW_PRECISION_ULPS`` epsilons):

- the params (16-bit params: against the float32 result rounded to their dtype);
- each block's new absmax, against the float64 state's block maximum;
- each new code: the value it stands for must be a nearest code (:func:`nearest_codes`) of a
  value within that error of the float64 state. The fused pass quantizes the float32 value it
  computed; where the update cancels (a momentum buffer's ``mu * buf + g / avg``), float32
  itself is off by more than its epsilon, and the rule allows as much.

Starting each step from gradfuse's own state keeps the comparison exact over many steps: a value
a few ulps from a threshold may take the other code, and a trajectory compared as a whole would
carry that into every later step.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _allowed(theirs: Tensor, reference: Tensor, old: Tensor) -> Tensor:
    """Per element, how far from the float64 ``reference`` a new state value may be: the
    table's low-precision rule with float32's own error ``theirs - reference``, its epsilons
    taken of the update's operands, bounded by the old value and the new one (``new = a * old +
    term``: where it cancels, float32 is off by an ulp of ``old`` and ``term``, not of ``new``)."""
    eps = torch.finfo(torch.float32).eps
    return tol.LOW_PRECISION_FACTOR * (
        theirs.double() - reference
    ).abs() + tol.LOW_PRECISION_ULPS * eps * (reference.abs() + old.abs())


@dataclass
class EightBitSteps:
    """What :func:`compare_8bit_steps` found, over all steps."""

    params: list[Tensor] = field(default_factory=list)  # gradfuse's, after each step
    params32: list[Tensor] = field(default_factory=list)  # float32 reference, in params' dtype
    params64: list[Tensor] = field(default_factory=list)  # float64 reference
    # The largest excess of an absmax, and of a code's distance, over what the rule allows
    # (<= 0: all within), and where.
    absmax_excess: float = float("-inf")
    code_excess: float = float("-inf")
    worst_absmax: str = ""
    worst_code: str = ""
    codes: int = 0  # how many codes were judged

    def flat(self, which: str) -> Tensor:
        parts = [t.detach().reshape(-1) for t in getattr(self, which)]
        return torch.cat(parts) if parts else torch.zeros(0)


def _float_state(
    optimizer: torch.optim.Optimizer, params: Sequence[Tensor], dtype: torch.dtype
) -> list[dict[str, Any]]:
    """Each param's state as ``dequantize_state_dict`` gives it, its tensors copied to
    ``dtype`` (the step counters too, which torch keeps as float32 tensors: exact)."""
    from gradfuse.optim import dequantize_state_dict

    ids = {id(p): i for i, p in enumerate(params)}
    raw = {ids[id(p)]: st for p, st in optimizer.state.items() if id(p) in ids}
    deq = dequantize_state_dict({"state": raw, "param_groups": []})["state"]
    return [
        {
            k: v.detach().to(dtype if v.is_floating_point() and v.dim() else v.dtype, copy=True)
            if isinstance(v, Tensor)
            else v
            for k, v in deq.get(i, {}).items()
        }
        for i in range(len(params))
    ]


def _judge_state(
    found: EightBitSteps,
    codes: Tensor,
    absmax: Tensor,
    x32: Tensor,
    x64: Tensor,
    old: Tensor,
    signed: bool,
    where: str,
) -> None:
    """Judges one 8-bit state tensor after a step into ``found``: gradfuse's ``codes`` and
    ``absmax`` against the float32 (``x32``) and float64 (``x64``) references' new values,
    ``old`` being the value before the step (the update's other operand)."""
    from gradfuse.optim import dynamic_map
    from gradfuse.optim._quant8 import BLOCK

    n = codes.numel()
    if n == 0:
        return
    x32, x64 = x32.detach().reshape(-1), x64.detach().reshape(-1)
    old = old.detach().double().reshape(-1)

    def block_max(x: Tensor) -> Tensor:
        return torch.nn.functional.pad(x.abs(), (0, (-n) % BLOCK)).view(-1, BLOCK).amax(1)

    a64 = block_max(x64)
    a_excess = (absmax.double() - a64).abs() - _allowed(block_max(x32), a64, block_max(old))
    if float(a_excess.max()) > found.absmax_excess:
        i = int(a_excess.argmax())
        found.absmax_excess = float(a_excess[i])
        if found.absmax_excess > 0:
            found.worst_absmax = (
                f"{where}, block {i}: absmax {float(absmax[i]):.9g}, float64 {a64[i]:.9g}"
            )
    # A block whose absmax is 0 holds zeros whatever its codes (bitsandbytes writes code 0 for
    # 0 / 0): its absmax is judged above, its codes are not.
    scale = absmax.double().repeat_interleave(BLOCK)[:n]
    kept = scale > 0
    c, scale = codes.reshape(-1)[kept].long(), scale[kept]
    found.codes += c.numel()
    if c.numel() == 0:
        return
    # gradfuse picked the nearest code to its own x / absmax, at most delta from xn; so its
    # code is at most 2 delta farther from xn than xn's nearest code.
    xn = x64[kept] / scale
    delta = _allowed(x32[kept], x64[kept], old[kept]) / scale
    code = dynamic_map(signed).double()
    excess = (code[c] - xn).abs() - (code[nearest_codes(xn, code, signed)] - xn).abs() - 2 * delta
    i = int(excess.argmax())
    if float(excess[i]) > found.code_excess:
        found.code_excess = float(excess[i])
        if found.code_excess > 0:
            found.worst_code = f"{where}: code {int(c[i])} for x / absmax = {float(xn[i]):.9g}"


def compare_8bit_steps(
    name: str,
    params: Sequence[Tensor],
    grads: Sequence[Sequence[Tensor]],
    *,
    min_8bit_size: int = 1,
    **kwargs: Any,
) -> EightBitSteps:
    """Steps ``gradfuse.optim.<name>8bit(params, min_8bit_size=..., **kwargs)`` once per entry
    of ``grads`` (a gradient per param), each step beside the float32 and float64 references
    of ``name`` (:func:`gradfuse.testing.reference_optimizer`) started from gradfuse's params
    and dequantized state; ``params`` are stepped in place."""
    import gradfuse.optim as gopt
    from gradfuse.optim._quant8 import SIGNED_KEYS
    from gradfuse.testing import LAMB, reference_optimizer

    opt = getattr(gopt, f"{name}8bit")(params, min_8bit_size=min_8bit_size, **kwargs)
    found = EightBitSteps()
    for k, gs in enumerate(grads):
        start = [p.detach().clone() for p in params]
        before = {dt: _float_state(opt, params, dt) for dt in (torch.float32, torch.float64)}
        group_steps = [group.get("step") for group in opt.param_groups]  # LAMB's, as apex
        for p, g in zip(params, gs, strict=True):
            p.grad = g.to(p.dtype, copy=True)
        opt.step()
        refs = {}
        for dtype in (torch.float32, torch.float64):
            ref_params = [s.to(dtype, copy=True).requires_grad_(True) for s in start]
            ref = reference_optimizer(name, ref_params, **kwargs)
            for p, rp, st, g in zip(params, ref_params, before[dtype], gs, strict=True):
                rp.grad = g.to(p.dtype).to(dtype)  # the gradient gradfuse saw
                if st:  # a copy: the step updates it in place, and `before` stays the old state
                    ref.state[rp] = {
                        k: v.clone() if isinstance(v, Tensor) else v for k, v in st.items()
                    }
            for theirs, step in zip(ref.param_groups, group_steps, strict=True):
                if step is not None:
                    theirs["step"] = step
            if isinstance(ref, LAMB):
                # LAMB's kernel computes u from its moments as stored (src/cpu/kernels/lamb.cpp).
                after = _float_state(opt, params, dtype)
                ref.stored_moments = {
                    rp: (st["exp_avg"], st["exp_avg_sq"])
                    for rp, st in zip(ref_params, after, strict=True)
                    if "exp_avg" in st
                }
            ref.step()
            refs[dtype] = (ref, ref_params)
        (ref32, ps32), (ref64, ps64) = refs[torch.float32], refs[torch.float64]
        for i, (p, p32, p64) in enumerate(zip(params, ps32, ps64, strict=True)):
            found.params.append(p.detach().clone())
            found.params32.append(p32.detach().to(p.dtype))
            found.params64.append(p64.detach().clone())
            st = opt.state[p]
            for key, value in st.items():
                if isinstance(value, Tensor) and value.dtype == torch.uint8:
                    _judge_state(
                        found,
                        value,
                        st[key + "_absmax"],
                        ref32.state[p32][key],
                        ref64.state[p64][key],
                        before[torch.float64][i].get(key, torch.zeros_like(p64)),
                        SIGNED_KEYS[key],
                        f"step {k + 1}, param {i} {key}",
                    )
    return found


def judge_8bit_steps(found: EightBitSteps) -> list[str]:
    """What is wrong with ``found`` by the tolerance table's low-precision rule; [] if
    nothing is."""
    problems = []
    ours, theirs, ref = found.flat("params"), found.flat("params32"), found.flat("params64")
    our_err, their_err, bound = tol.low_precision_bound(ours, theirs, ref)
    if not our_err <= bound:
        problems.append(
            f"params: error vs float64 {our_err:.3g} > bound {bound:.3g} (the float32 "
            f"reference's {their_err:.3g})"
        )
    if found.absmax_excess > 0:
        problems.append(f"absmax {found.absmax_excess:.3g} beyond the bound ({found.worst_absmax})")
    if found.code_excess > 0:
        problems.append(
            f"a code {found.code_excess:.3g} farther than a nearest one ({found.worst_code})"
        )
    if found.codes == 0:
        problems.append("no 8-bit state was written")
    return problems
