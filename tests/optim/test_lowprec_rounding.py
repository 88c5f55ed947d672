"""The rounding rules of low-precision updates (gradfuse/math/rounding.h), tested through the
real kernels: an SGD step p - lr * g on bfloat16 params whose float32 result is known exactly.

- nearest: bit-identical to torch's ``.to(torch.bfloat16)`` of the float32 result;
- stochastic: always one of the two bfloat16 neighbours, unbiased (the mean over many
  roundings equals the float32 value within a stated bound), deterministic for a seed, the
  same for every thread count and ISA;
- Kahan: bit-identical to the compensated-summation formula written with torch ops.
"""

from __future__ import annotations

import math

import pytest
import torch

import gradfuse
from gradfuse import _native
from gradfuse.functional import sgd_


def _x32(p: torch.Tensor, g: torch.Tensor, lr: float) -> torch.Tensor:
    """The float32 value SGD computes before rounding: p - float32(lr) * g, in float32."""
    lr32 = torch.tensor(lr, dtype=torch.float32)
    return p.float() - lr32 * g.float()


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bfloat16 values just below and above x (equal where x is a bfloat16 value), by
    truncating and incrementing the bit pattern (x > 0 here)."""
    bits = x.view(torch.int32)
    lo = (bits & ~0xFFFF).view(torch.float32)
    hi = ((bits & ~0xFFFF) + 0x10000).view(torch.float32)
    hi = torch.where(lo == x, lo, hi)
    return lo, hi


def _sgd_step(p: torch.Tensor, g: torch.Tensor, lr: float, **kw: object) -> torch.Tensor:
    out = p.clone()
    sgd_([out], [g], lr=lr, **kw)  # type: ignore[arg-type]
    return out


def test_nearest_matches_torch_cast() -> None:
    p = torch.randn(100_003).to(torch.bfloat16)
    g = torch.randn(100_003).to(torch.bfloat16)
    lr = 0.0123
    ours = _sgd_step(p, g, lr)
    expected = _x32(p, g, lr).to(torch.bfloat16)
    assert torch.equal(ours.view(torch.int16), expected.view(torch.int16))


@pytest.mark.parametrize("lr", [1e-4, 3.3e-3, 0.37 * 2.0**-8, 1.7 * 2.0**-8])
def test_stochastic_is_unbiased_and_picks_a_neighbour(lr: float) -> None:
    # p = 1, g = 1: every element rounds the same x = 1 - lr, which bfloat16 cannot hold.
    n = 1 << 20
    p = torch.ones(n, dtype=torch.bfloat16)
    g = torch.ones(n, dtype=torch.bfloat16)
    x = float(_x32(p[:1], g[:1], lr))
    ours = _sgd_step(p, g, lr, rounding="stochastic", seed=1234).float()
    lo, hi = (float(t) for t in _neighbours(torch.tensor([x])))
    assert lo < x < hi
    assert bool(((ours == lo) | (ours == hi)).all())
    # Each rounding has mean x and variance (x - lo) (hi - x) <= (hi - lo)^2 / 4, so the mean
    # of n has standard deviation at most (hi - lo) / (2 sqrt(n)); allow 6 of them (a false
    # failure has probability ~1e-9).
    bound = 6 * (hi - lo) / (2 * math.sqrt(n))
    assert abs(float(ours.double().mean()) - x) <= bound
    # ... and the fraction rounded up is the distance from lo in units of the spacing.
    up = float((ours == hi).double().mean())
    assert abs(up - (x - lo) / (hi - lo)) <= 6 * 0.5 / math.sqrt(n)


def test_stochastic_unbiased_on_random_values() -> None:
    n = 1 << 20
    p = (torch.rand(n) + 0.5).to(torch.bfloat16)  # positive, so bit arithmetic gives neighbours
    g = torch.randn(n).to(torch.bfloat16)
    lr = 1e-3
    x = _x32(p, g, lr)
    ours = _sgd_step(p, g, lr, rounding="stochastic", seed=99).float()
    lo, hi = _neighbours(x)
    assert bool(((ours == lo) | (ours == hi)).all())
    # The rounding error in units of the local spacing has mean 0 and lies in (-1, 1) with
    # variance <= 1/4: the mean of n is within 6 / (2 sqrt(n)) of 0.
    spacing = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    err = ((ours - x) / spacing).double()
    assert abs(float(err.mean())) <= 6 * 0.5 / math.sqrt(n)
    # Nearest rounding never errs by more than half a spacing; stochastic rounding does (it is
    # not nearest rounding in disguise).
    assert float(err.abs().max()) > 0.5


def test_stochastic_is_deterministic_for_a_seed() -> None:
    p = torch.randn(10_007).to(torch.bfloat16)
    g = torch.randn(10_007).to(torch.bfloat16)
    a = _sgd_step(p, g, 1e-3, rounding="stochastic", seed=7)
    b = _sgd_step(p, g, 1e-3, rounding="stochastic", seed=7)
    c = _sgd_step(p, g, 1e-3, rounding="stochastic", seed=8)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    assert not torch.equal(a.view(torch.int16), c.view(torch.int16))


def test_stochastic_same_for_every_thread_count_and_isa() -> None:
    core = _native.core()
    shapes = [(300_001,), (7,), (65_536,), (1,)]
    ps = [torch.randn(s).to(torch.bfloat16) for s in shapes]
    gs = [torch.randn(s).to(torch.bfloat16) for s in shapes]
    results = []
    original_isa = core.cpu_isa()
    original_threads = gradfuse.get_num_threads()
    try:
        for isa in core.cpu_isas().split(","):
            for threads in (1, 2, 3):
                core.set_cpu_isa(isa.strip())
                gradfuse.set_num_threads(threads)
                out = [p.clone() for p in ps]
                sgd_(out, gs, lr=1e-3, rounding="stochastic", seed=2**63 + 5)
                results.append((isa, threads, out))
    finally:
        core.set_cpu_isa(original_isa)
        gradfuse.set_num_threads(original_threads)
    _, _, first = results[0]
    for isa, threads, out in results[1:]:
        for a, b in zip(first, out, strict=True):
            assert torch.equal(a.view(torch.int16), b.view(torch.int16)), (isa, threads)


def test_kahan_matches_the_formula() -> None:
    n = 50_001
    p = torch.randn(n).to(torch.bfloat16)
    c = (torch.randn(n) * 1e-3).to(torch.bfloat16)
    g = torch.randn(n).to(torch.bfloat16)
    lr = 1e-4
    ours_p, ours_c = p.clone(), c.clone()
    sgd_([ours_p], [g], lr=lr, kahan_comps=[ours_c])
    p_old = p.float()
    y = (_x32(p, g, lr) - p_old) + c.float()
    t = (p_old + y).to(torch.bfloat16)
    c_new = (y - (t.float() - p_old)).to(torch.bfloat16)
    assert torch.equal(ours_p.view(torch.int16), t.view(torch.int16))
    assert torch.equal(ours_c.view(torch.int16), c_new.view(torch.int16))


def test_kahan_accumulates_updates_below_an_ulp() -> None:
    # 1 - 1e-4 rounds back to 1 in bfloat16 (spacing 2^-8 below 1): plain SGD never moves, the
    # compensated update does, and tracks the float32 sum.
    p_plain = torch.ones(1000, dtype=torch.bfloat16)
    p_kahan = p_plain.clone()
    comp = torch.zeros_like(p_kahan)
    g = torch.ones_like(p_plain)
    for _ in range(200):
        sgd_([p_plain], [g], lr=1e-4)
        sgd_([p_kahan], [g], lr=1e-4, kahan_comps=[comp])
    assert bool((p_plain == 1).all())
    exact = 1 - 200 * 1e-4
    # The compensation is itself bfloat16 (8 significant bits), so param + compensation tracks
    # the exact sum to a few percent of the drift, not to float32 accuracy.
    assert abs(float(p_kahan[0].float() + comp[0].float()) - exact) < 0.05 * 200 * 1e-4
    assert abs(float(p_kahan[0]) - exact) <= 2.0**-8


_M64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # 32-bit lanes held in int64 so that products do not overflow before the mask.
    m = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & m
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def test_stochastic_bits_follow_the_documented_hash() -> None:
    # The random bits are a pure function of (seed, tensor, element) written in
    # gradfuse/math/rounding.h; this Python transcription pins it, so any engine (CPU ISA,
    # CUDA) that reproduces it rounds identically.
    from gradfuse.functional._multi_tensor import mix_seed

    n = 70_001
    p = torch.randn(n).to(torch.bfloat16)
    g = torch.randn(n).to(torch.bfloat16)
    lr = 1e-3
    seed = 424242
    ours = _sgd_step(p, g, lr, rounding="stochastic", seed=seed)
    call_seed = mix_seed(seed, 0)  # the first (only) native call of the functional
    z = _splitmix64(call_seed ^ _splitmix64(0))  # tensor 0
    k0, k1 = z & 0xFFFFFFFF, z >> 32
    i = torch.arange(n, dtype=torch.int64)
    r = _mix32(_mix32((i & 0xFFFFFFFF) ^ k0) ^ ((k1 + (i >> 32) * 0x9E3779B9) & 0xFFFFFFFF))
    u = _x32(p, g, lr).view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    expected = (((u + (r >> 16)) >> 16) & 0xFFFF).to(torch.int32)
    got = ours.view(torch.int16).to(torch.int32) & 0xFFFF
    assert torch.equal(got, expected)
