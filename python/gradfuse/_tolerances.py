"""Every numeric tolerance gradfuse is judged by, in one table (DESIGN.md §7).

Shipped with the package so that ``gradfuse check`` applies on a user's machine exactly the
numbers the test suite applies in CI; ``tests/tolerances.py`` re-exports this module. A looser
number needs a row here with a comment saying why; nothing writes a tolerance inline.

Imports torch: only ``gradfuse check`` and the tests load this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float

    def __str__(self) -> str:
        return f"rtol {self.rtol:.0e}, atol {self.atol:.0e}"


# One optimizer step against torch's for-loop reference in the same dtype. float64 agrees to
# rounding; float32 to an ulp or two (torch's CPU kernels fuse some multiply-adds, gradfuse's
# CPU rule is compiled without contraction).
STEP: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-12, atol=1e-14),
    torch.float32: Tol(rtol=4e-7, atol=1e-7),
}

# Trajectories of many steps against torch's for-loop reference (foreach=False) in the same
# dtype: per-step ulp differences accumulate (DESIGN.md §7: float32 within 1e-5 relative).
TRAJECTORY: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-12, atol=1e-13),
    torch.float32: Tol(rtol=1e-5, atol=1e-6),
}

# float16 / bfloat16: gradfuse computes in float32 and rounds once per stored value, torch's
# for-loop rounds after every operation. Both are compared with a float64 run from the same
# start; gradfuse's error may be at most LOW_PRECISION_FACTOR times torch's own error, plus
# LOW_PRECISION_ULPS units of the dtype's epsilon times the reference magnitude (so that a
# torch error that happens to be exactly zero does not demand perfection).
LOW_PRECISION_FACTOR = 2.0
LOW_PRECISION_ULPS = 2.0
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)
# The same rule judges 8-bit state (gradfuse.testing.compare_8bit_steps), a step at a time from
# the same dequantized state: the params, each block's absmax, and the value each code stands
# for may be as far from the float64 reference as LOW_PRECISION_FACTOR times the float32
# reference's own error, plus LOW_PRECISION_ULPS float32 epsilons of the value and of its change
# this step (the update's own roundings are relative to the update: p - lr * u near 0 is still
# a few ulps of lr * u off), plus LOW_PRECISION_FACTOR times how far the float64 result moves
# when each input in turn moves by one float32 epsilon (the problem's conditioning: where an
# update cancels, as -g + wd * p or mu * buf + g / avg may, any float32 implementation is off by
# an ulp of the operands, even where the float32 reference happened to round well). 16-bit
# params: rounded once from a value within that.

# Loss values and input gradients against torch.nn.functional + autograd, same dtype.
LOSS: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-12, atol=1e-14),
    torch.float32: Tol(rtol=2e-6, atol=1e-7),
    torch.float16: Tol(rtol=1e-3, atol=1e-5),
    torch.bfloat16: Tol(rtol=1.6e-2, atol=1e-5),
}

# The same inputs through the CPU and the CUDA kernels (one shared rule): a few ulp.
CPU_VS_CUDA: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-13, atol=1e-15),
    torch.float32: Tol(rtol=5e-6, atol=1e-7),
    torch.float16: Tol(rtol=1e-3, atol=1e-5),
    torch.bfloat16: Tol(rtol=8e-3, atol=1e-5),
}

# capturable=True against capturable=False, same dtype, same inputs (tests/functional/
# test_capturable.py): one rule, and the per-step scalars from the same expressions in double,
# but computed by torch's tensor kernels (pow through ATen, the square root as
# torch.pow(x, 0.5)) instead of Python's math on the host. They may differ in the last bit of
# a double: float64 trajectories differ by a few ulp (measured: at most 1.2e-14 relative over
# 50 Adam steps). Narrowed to float32 the scalars almost always agree (measured: float32,
# float16 and bfloat16 bitwise equal for Adam/AdamW/Adamax/NAdam/RAdam over 50 steps), but a
# double that falls on a float32 rounding boundary would move one scalar by one float32 ulp,
# and a 16-bit value rounded from such a step may then land one unit of the dtype away (2
# units allowed: later steps carry it forward). Far below any error in a rule (a wrong bias
# correction or weight decay is off by percents).
CAPTURABLE_VS_HOST: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-13, atol=1e-15),
    torch.float32: Tol(rtol=1e-6, atol=1e-7),
    torch.float16: Tol(rtol=2e-3, atol=1e-5),
    torch.bfloat16: Tol(rtol=1.6e-2, atol=1e-5),
}

# A whole training run (examples/train_digits.py: a float32 MLP, matmuls, a loss and an
# optimizer) with gradfuse's optimizer and loss beside torch's, same seed and batches: the
# per-step loss curves. Each step's ulp-level differences in the update feed back through the
# next forward pass and its matmuls, so the curves drift further apart than a single kernel's
# trajectory does; 1e-4 relative still fails on any real difference in the rule (a wrong
# bias correction or weight decay moves the curve by percents within a few steps).
TRAINING_CURVE = Tol(rtol=1e-4, atol=1e-6)

# The same comparison under bfloat16 autocast (float32 weights and optimizer state, matmuls in
# bfloat16: tests/integrations/test_frameworks_*.py), gradfuse's AdamW beside torch's fused one.
# The first step is bitwise equal and later ones differ by float32 ulps, as in TRAINING_CURVE;
# but an ulp in a weight can flip the bfloat16 rounding (2^-8 relative) of an activation in the
# next forward pass, which moves that step's gradient at bfloat16 precision. Measured: weights
# of ~0.02 apart by up to 2.5e-5 after 6 AdamW steps of lr 3e-3 (under 1% of one step's
# update), losses within 3e-6 relative. A wrong rule (bias correction, a dropped step) moves
# weights by a step's update, lr = 3e-3, and is caught; the float32 runs (TRAINING_CURVE) check
# the finer terms such as weight decay.
AUTOCAST_BF16_CURVE = Tol(rtol=1.6e-2, atol=1e-4)


def max_errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max absolute, max relative) elementwise difference, computed in float64; NaNs in the
    same places count as equal, a NaN in one of them only is an infinite error."""
    if actual.numel() == 0:
        return 0.0, 0.0
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    both_nan = torch.isnan(a) & torch.isnan(e)
    diff = (a - e).abs()
    diff = torch.where(both_nan, torch.zeros_like(diff), diff)
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    rel = diff / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
    rel = torch.where(diff == 0, torch.zeros_like(rel), rel)
    return float(diff.max()), float(rel.max())


def within(actual: torch.Tensor, expected: torch.Tensor, tol: Tol) -> bool:
    """``torch.testing.assert_close``'s criterion (|a - e| <= atol + rtol |e|), as a bool."""
    try:
        assert_close(actual, expected, tol)
    except AssertionError:
        return False
    return True


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: Tol, msg: str = "") -> None:
    torch.testing.assert_close(
        actual, expected, rtol=tol.rtol, atol=tol.atol, equal_nan=True, msg=lambda m: f"{msg}\n{m}"
    )


def _error_vs(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Max |x - ref| over the elements where ``ref`` is a number; equal infinities count as
    0, and a NaN where ``ref`` has none (or a number where ``ref`` is NaN) as infinite."""
    x = x.detach().double().cpu()
    ref_nan = torch.isnan(ref)
    if bool((torch.isnan(x) != ref_nan).any()):
        return float("inf")
    keep = ~ref_nan
    if not bool(keep.any()):
        return 0.0
    xs, rs = x[keep], ref[keep]
    diff = torch.where(xs == rs, torch.zeros_like(xs), (xs - rs).abs())
    return float(diff.max())


def low_precision_bound(
    ours: torch.Tensor, theirs: torch.Tensor, reference: torch.Tensor
) -> tuple[float, float, float]:
    """(our error, torch's error, the bound our error must stay within) against the float64
    ``reference``, as ``assert_low_precision`` judges them. Where torch itself produces a NaN
    or an infinity that the float64 run does not (an fp16 underflow, say), torch's error is
    infinite and so is the bound."""
    assert ours.dtype == theirs.dtype
    eps = torch.finfo(ours.dtype).eps
    ref = reference.detach().double().cpu()
    if ref.numel() == 0:
        return 0.0, 0.0, 0.0
    our_err = _error_vs(ours, ref)
    their_err = _error_vs(theirs, ref)
    finite = ref[torch.isfinite(ref)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    bound = LOW_PRECISION_FACTOR * their_err + LOW_PRECISION_ULPS * eps * scale
    return our_err, their_err, bound


def assert_low_precision(
    ours: torch.Tensor, theirs: torch.Tensor, reference: torch.Tensor, msg: str = ""
) -> None:
    """``ours`` (16-bit) is at most LOW_PRECISION_FACTOR x as far from the float64
    ``reference`` as torch's own result ``theirs`` in the same dtype, elementwise-max."""
    our_err, their_err, bound = low_precision_bound(ours, theirs, reference)
    finite = reference.double()[torch.isfinite(reference.double())]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    assert our_err <= bound, (
        f"{msg}: max error {our_err:.3g} vs float64 exceeds {LOW_PRECISION_FACTOR}x torch's "
        f"{their_err:.3g} (+{LOW_PRECISION_ULPS} eps x {scale:.3g})"
    )


# Ill-conditioned trajectories, where the max error is a lottery for both runs: centered RMSprop
# with a short memory (alpha=0.3) in float32, where sqrt(square_avg - grad_avg^2) cancels most
# leading bits of a few elements, so ulp-level differences (torch fuses multiply-adds, gradfuse
# does not) grow to ~1e-4 there while gradfuse and torch stay equally far from float64 on
# average (measured: mean errors within 10% of each other, max errors up to 4x apart either
# way). There the mean error against float64 must be at most MEAN_ERROR_FACTOR x torch's.
MEAN_ERROR_FACTOR = 1.25


def assert_mean_error(
    ours: torch.Tensor, theirs: torch.Tensor, reference: torch.Tensor, msg: str = ""
) -> None:
    """``ours`` is on average at most MEAN_ERROR_FACTOR x as far from the float64
    ``reference`` as torch's own result ``theirs`` in the same dtype."""
    ref = reference.double()
    assert torch.isfinite(ours).all(), f"{msg}: non-finite values"
    our_err = (ours.double() - ref).abs().mean().item()
    their_err = (theirs.double() - ref).abs().mean().item()
    assert our_err <= MEAN_ERROR_FACTOR * their_err, (
        f"{msg}: mean error {our_err:.3g} vs float64 exceeds {MEAN_ERROR_FACTOR}x torch's "
        f"{their_err:.3g}"
    )


# Gradient norms (gradfuse.grad_norms, clip_grad_norm_'s total) against the norm computed in
# float64 from the same values. float32 accumulates in float32 over fixed blocks with 16 lanes
# and a pairwise merge (measured <= 2e-7 relative; torch's own float32 norms are off by up to
# ~6e-6 here, so comparing with torch's float32 result would test torch). 16-bit norms accumulate
# in float32 and are returned rounded to the gradients' dtype: within one unit in the last
# place (eps relative). float64: rounding.
NORM: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=1e-12, atol=0.0),
    torch.float32: Tol(rtol=1e-6, atol=0.0),
    torch.float16: Tol(rtol=float(torch.finfo(torch.float16).eps), atol=0.0),
    torch.bfloat16: Tol(rtol=float(torch.finfo(torch.bfloat16).eps), atol=0.0),
}

# Optimizer with max_grad_norm against torch's clip_grad_norm_ + the torch optimizer, float64:
# the clip coefficient reaches the kernels as a float32 scalar (GradScaling's clip_coef, as AMP's
# scale), so each clipped gradient carries a relative error up to 2^-24 (6e-8). Over a 20-step
# trajectory with updates of ~0.1 per step that is up to ~1e-7 absolute (measured 1.3e-8).
CLIPPED_FLOAT64 = Tol(rtol=2e-7, atol=1e-7)

# torch.autograd.gradcheck of the loss modules' backward in float64 (finite differences with
# step 1e-6): the central difference is exact to O(eps^2) ~ 1e-12 on these smooth losses, so a
# tenth of gradcheck's default atol (1e-5) still passes with room, while a wrong derivative
# (a missing factor, a wrong reduction) is off by O(1).
GRADCHECK = Tol(rtol=1e-3, atol=1e-6)
GRADCHECK_EPS = 1e-6

# gradfuse/math/fastmath.h's vexp / vlog / vlog1p (float32): the documented bound, 2 ulp of the
# correctly rounded float32 result (an exhaustive run measured at most 0.99 ulp). Their float64
# versions are glibc's, which numpy's own functions may differ from in the last bit (2^-52).
FASTMATH_ULPS = 2.0
LIBM_FLOAT64 = Tol(rtol=3e-16, atol=0.0)

# bfloat16 params with float32 state (state_dtype=torch.float32) against torch's float32 optimizer
# restarted from the bfloat16 params at every step (tests/optim/test_lowprec_optim.py): the
# states follow the same float32 arithmetic (measured: at most 4.8e-7 apart over 6 seeds x
# SGD/Adam/AdamW x 20 steps), but a param may round to the other bfloat16 neighbour where the
# float32 value sits on a midpoint (rare: the test bounds it at 1% of the elements), and through
# weight decay (1e-2) that moves the next states by about 1e-2 x one bfloat16 spacing.
FLOAT32_STATE_OF_BFLOAT16 = Tol(rtol=1e-2, atol=1e-5)


# gradfuse.optim.Muon against torch.optim.Muon, same dtype (tests/optim/test_muon.py, gradfuse
# check). Both run the Newton-Schulz iteration in bfloat16: torch with bfloat16 matmuls, gradfuse
# with float32 matmuls of the same bfloat16 values, rounding to bfloat16 wherever torch's tensors
# are bfloat16. Both accumulate in float32, in different orders, so a product that falls on a
# bfloat16 rounding boundary can land one bfloat16 unit (2^-8 relative) away, and the later
# iterations carry it into its row and column: the update of that weight differs by ~2^-8 of
# itself. Measured over 6 steps of lr 0.02 on the test's matrices: 85-99.9% of the elements
# bitwise equal, the rest at most 5e-5 apart (nesterov=False, whose larger inputs flip more
# often). Weights move by ~lr per step, so a wrong rule (weight decay, the adjusted lr, the
# Nesterov blend: differences of lr * 0.1 to lr * 0.3 per step) is far outside 1e-4.
# The row is for those few small matrices and steps (the tests' and `gradfuse check`'s, fixed
# seeds): on larger ones the flips spread, and 5 steps of a 256x128 or 300x20 matrix end
# 0.8-4e-4 apart (4-54% bitwise equal) while each stays as far from a float64 iteration as
# the other (2.2-5.6e-4); test_any_rank_against_float64_reference holds gradfuse to that.
MUON_BF16_NS: dict[torch.dtype, Tol] = {
    torch.float64: Tol(rtol=0.0, atol=1e-4),
    torch.float32: Tol(rtol=1e-5, atol=1e-4),
}
