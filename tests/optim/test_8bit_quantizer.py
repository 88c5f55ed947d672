"""The 8-bit quantizer's two paths (cpu/quant8.h) against each other, on every ISA: the exact
search (code_of; every value on the baseline ISA) and the arithmetic quantizer of the wider ISAs,
whose constants are used only after check_regions has proven them against every threshold of
the map. tests/optim/test_8bit.py holds the quantizer to the nearest code and to bitsandbytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
import torch

import gradfuse.optim as gopt
from gradfuse import _native

T = TypeVar("T")


def _per_isa(f: Callable[[], T]) -> dict[str, T]:
    """``f()`` on every ISA that this build and CPU run, by name (the ISA in use restored)."""
    core = _native.core()
    before = core.cpu_isa()
    out: dict[str, T] = {}
    try:
        for isa in str(core.cpu_isas()).split(","):
            core.set_cpu_isa(isa)
            out[isa] = f()
    finally:
        core.set_cpu_isa(before)
    return out


def _values(signed: bool) -> torch.Tensor:
    """Blocks of 255 values and 1.0 (the block's absmax): every midpoint between two codes and
    the floats either side of it (where the arithmetic quantizer leaves the code to the search),
    then log-uniform magnitudes from 1e-8 to 1 (where it does not); both signs for the signed
    map."""
    code = gopt.dynamic_map(signed)
    mids = (code[1:] + code[:-1]) / 2
    near = [mids, torch.nextafter(mids, torch.tensor(2.0)), torch.nextafter(mids, -mids)]
    g = torch.Generator().manual_seed(3)
    xn = torch.cat([*near, torch.pow(10.0, -8 * torch.rand(256 * 255, generator=g))])
    if signed:
        xn = torch.cat([xn, -xn])
    blocks = (xn.numel() + 254) // 255
    xn = torch.cat([xn, torch.full((blocks * 255 - xn.numel(),), 0.5)]).view(blocks, 255)
    return torch.cat([xn, torch.ones(blocks, 1)], 1).flatten()


@pytest.mark.parametrize("signed", [True, False])
def test_every_isa_quantizes_as_the_exact_search(signed: bool) -> None:
    """The same codes and absmax on every ISA, in blocks scaled by powers of two (exact)."""
    x = _values(signed)
    x = x * torch.pow(2.0, torch.arange(x.numel() // 256) % 60 - 30.0).repeat_interleave(256)
    results = _per_isa(lambda: gopt.quantize_blockwise(x, signed))
    codes, absmax = results["baseline"]
    for isa, (c, a) in results.items():
        assert torch.equal(c, codes), isa
        assert torch.equal(a, absmax), isa


@pytest.mark.parametrize("signed", [True, False])
def test_tiny_blocks_quantize_as_the_exact_search(signed: bool) -> None:
    """Blocks whose absmax is tiny, down to denormals (second moments of tiny gradients): every
    ISA gives the exact search's codes. The arithmetic quantizer's reciprocal overflowed below
    ~2^-128 (every code 0), and its residual loses bits where it is denormal: such blocks
    divide."""
    x = _values(signed)[: 256 * 40]
    scale = torch.pow(2.0, -torch.arange(40, dtype=torch.float64) * 2.5 - 40).float()
    x = (x.view(40, 256) * scale[:, None]).flatten()
    assert (x.view(40, 256).abs().amax(1) < 2.0**-125).any()
    results = _per_isa(lambda: gopt.quantize_blockwise(x, signed))
    codes, absmax = results["baseline"]
    assert (codes.view(40, 256)[-1] != 0).any()
    for isa, (c, a) in results.items():
        assert torch.equal(c, codes), isa
        assert torch.equal(a, absmax), isa


@pytest.mark.parametrize("signed", [True, False])
def test_quantizer_constants_are_checked(signed: bool) -> None:
    """As built, the arithmetic quantizer's constants pass their checks. Damaged three ways (a
    decade's frame 0.2% too steep, a region bound 3% late, the region estimate three quarters
    of a decade early) the checks refuse them, and the quantizer, searching instead, still gives
    the exact search's codes, while the damaged constants, used anyway, would not
    (_core.q8_self_test)."""
    x = _values(signed)
    core = _native.core()

    def run(damage: int) -> tuple[bool, bool, torch.Tensor, torch.Tensor]:
        codes = torch.empty(x.numel(), dtype=torch.uint8)
        forced = torch.empty_like(codes)
        passed, arithmetic = core.q8_self_test(
            x.data_ptr(), codes.data_ptr(), forced.data_ptr(), x.numel(), signed, damage
        )
        return passed, arithmetic, codes, forced

    runs = _per_isa(lambda: [run(damage) for damage in range(4)])
    want = runs["baseline"][0][2]  # the exact search on every value
    for isa, per_damage in runs.items():
        for damage, (passed, arithmetic, codes, forced) in enumerate(per_damage):
            assert passed == (damage == 0), (isa, damage)
            assert arithmetic == (isa != "baseline"), isa
            assert torch.equal(codes, want), (isa, damage)
            if damage == 0 or not arithmetic:
                assert torch.equal(forced, want), (isa, damage)
            else:
                assert not torch.equal(forced, want), (isa, damage)


@pytest.mark.parametrize("signed", [True, False])
def test_dequantize_is_the_map_on_every_isa(signed: bool) -> None:
    """Every code of both maps, in blocks of several absmax values (0, tiny, huge, and a last
    block of 37 values, shorter than a vector's 8 lanes allow), dequantizes to map[code] *
    absmax bit for bit on every ISA."""
    g = torch.Generator().manual_seed(5)
    codes = torch.arange(256, dtype=torch.uint8).repeat(6)[:1317]
    codes = codes[torch.randperm(codes.numel(), generator=g)]
    absmax = torch.tensor([1.0, 0.0, 3.7e-30, 2.5e30, 0.37, 1.25], dtype=torch.float32)
    want = gopt.dynamic_map(signed)[codes.long()] * absmax.repeat_interleave(256)[:1317]
    for isa, out in _per_isa(lambda: gopt.dequantize_blockwise(codes, absmax, signed)).items():
        assert torch.equal(out, want), isa
        assert torch.equal(out.view(torch.int32), want.view(torch.int32)), isa  # -0.0 too
