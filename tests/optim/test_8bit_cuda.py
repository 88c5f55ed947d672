"""Block-wise 8-bit optimizer state on CUDA (issue 16; cuda/multi_tensor_apply.cuh,
multi_tensor_kernel_q8), against the float32 references and against the CPU kernel.

A file of its own, apart from test_8bit.py: that module needs bitsandbytes, which the GPU
machine does not have, and these tests do not. The CUDA kernel runs the CPU engine's rule
(gradfuse/math/quant8.h for the codes, the optimizers' shared rules for the update); the
cross-checks with the CPU allow what optim_testing's CUDA helpers say (a neighbouring code or
16-bit value for a few elements in a thousand) and judge the rest tightly.
"""

from __future__ import annotations

import copy

import pytest
import torch

import gradfuse.optim as gopt
from gradfuse.testing import compare_8bit_steps, judge_8bit_steps
from optim_testing import (
    EIGHT_BIT,
    assert_codes_agree,
    assert_params_like_cpu,
    assert_state_like_cpu,
    last_step_on_both,
    on_both,
    stepped_on,
)

pytestmark = pytest.mark.cuda

# Empty, one element, a partial block, whole blocks plus a tail, a matrix.
STEP_SHAPES = [(0,), (1,), (7,), (4097,), (33, 17)]
# More than one chunk of the kernel (65536 elements) and a partial last block.
WIDE = (2 * 65536 + 300,)


# 45 cases of CPU reference runs: left out of gpu_check.sh's compute-sanitizer runs (the
# cross-checks with the CPU kernel below run there).
@pytest.mark.no_sanitizer
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("name", "kwargs"), EIGHT_BIT)
def test_cuda_each_8bit_step_is_its_float32_reference(
    name: str, kwargs: dict[str, object], dtype: torch.dtype
) -> None:
    """Each step of the CUDA kernel from its own state is the float32 reference's step from
    that state dequantized: params, absmax and every code (compare_8bit_steps, the test the
    CPU kernel passes in test_8bit.py), four steps in a row."""
    g = torch.Generator().manual_seed(5)
    params = [
        torch.randn(s, generator=g).to("cuda", dtype).requires_grad_(True) for s in STEP_SHAPES
    ]
    grads = [[torch.randn(s, generator=g) for s in STEP_SHAPES] for _ in range(4)]
    found = compare_8bit_steps(name, params, grads, **kwargs)
    assert found.codes > 4 * 4000
    assert judge_8bit_steps(found) == []


def _start(shapes: list[tuple[int, ...]], dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in shapes]


def _grads(shapes: list[tuple[int, ...]], steps: int, seed: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) * 0.1 for s in shapes] for _ in range(steps)]


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (gopt.AdamW8bit, {"lr": 1e-2, "weight_decay": 0.1}),
        (gopt.Adam8bit, {"amsgrad": True}),
        (gopt.Lion8bit, {"lr": 1e-3}),
        (gopt.SGD8bit, {"lr": 1e-2, "momentum": 0.9}),
        (gopt.RMSprop8bit, {"lr": 1e-3, "centered": True, "momentum": 0.5}),
    ],
)
def test_cuda_8bit_step_is_the_cpu_kernels(
    cls: type[torch.optim.Optimizer], kwargs: dict[str, object]
) -> None:
    """From the same state (three CPU steps in), one step on CUDA and one on the CPU: the same
    params to rounding, the same absmax, the same codes (a neighbour for a few)."""
    shapes = [WIDE, (4097,), (300, 129), (17,)]
    start, grads = _start(shapes, torch.float32, 0), _grads(shapes, 4, 1)
    _, _, ours, opt_cuda, theirs, opt_cpu = last_step_on_both(
        cls, start, grads, min_8bit_size=1, **kwargs
    )
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-5, atol=1e-6)
    assert_state_like_cpu(opt_cuda, opt_cpu)


@pytest.mark.parametrize(
    "policy",
    [{"master_weights": True}, {"rounding": "stochastic"}, {"kahan": True}, {}],
)
def test_cuda_8bit_bfloat16_policies_are_the_cpu_kernels(policy: dict[str, object]) -> None:
    """bfloat16 params with 8-bit state under each param policy: one step on CUDA from a CPU
    run's state is the CPU kernel's (stochastic rounding draws the same bits on both)."""
    shapes = [(4097,), (70_001,)]
    start, grads = _start(shapes, torch.bfloat16, 2), _grads(shapes, 3, 3)
    kw = {"lr": 1e-2, "min_8bit_size": 1, **policy}
    _, _, ours, opt_cuda, theirs, opt_cpu = last_step_on_both(gopt.AdamW8bit, start, grads, **kw)
    assert_params_like_cpu(ours, theirs)
    assert_state_like_cpu(opt_cuda, opt_cpu)


def test_cuda_8bit_trajectory_follows_the_cpu() -> None:
    """Twenty steps on each device from the same start end close: the two kernels' rare
    neighbouring codes do not drift apart."""
    shapes = [(5000,), (64, 129)]
    start, grads = _start(shapes, torch.float32, 4), _grads(shapes, 20, 5)
    ours, _, theirs, _ = on_both(gopt.AdamW8bit, start, grads, lr=1e-3)
    _assert_close_runs(ours, theirs, start)


def _assert_close_runs(
    ours: list[torch.Tensor], theirs: list[torch.Tensor], start: list[torch.Tensor]
) -> None:
    """Each param of a CUDA run within 5% of the way the CPU run moved it."""
    for p, q, s in zip(ours, theirs, start, strict=True):
        moved = (q.detach() - s).abs().max().item()
        assert moved > 1e-3
        assert (p.detach().cpu() - q.detach()).abs().max().item() < 0.05 * moved


def test_cuda_8bit_many_tensors_in_one_call() -> None:
    """More tensors than one launch table holds (192): every launch's entries get their own
    absmax arrays (Q8Extras), against the CPU kernel."""
    shapes = [(4097 + k,) for k in range(200)]
    start, grads = _start(shapes, torch.float32, 6), _grads(shapes, 2, 7)
    ours, opt_cuda, theirs, opt_cpu = on_both(gopt.AdamW8bit, start, grads, lr=1e-2)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-4, atol=1e-4)
    assert_state_like_cpu(opt_cuda, opt_cpu)


@pytest.mark.no_sanitizer
def test_cuda_8bit_tensor_across_two_launches() -> None:
    """A launch table holds 768 chunks: the second tensor starts in the first launch and goes
    on as entry 0 of the next (Q8Extras.keep carries its absmax arrays)."""
    shapes = [(700 * 65536,), (100 * 65536 + 5,)]
    start, grads = _start(shapes, torch.float32, 12), _grads(shapes, 1, 13)
    ours, opt_cuda, theirs, opt_cpu = on_both(gopt.AdamW8bit, start, grads, lr=1e-2)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach().cpu(), q.detach(), rtol=1e-5, atol=1e-6)
    assert_state_like_cpu(opt_cuda, opt_cpu)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [0, 1, 7, 256, 4097, 200_003])
def test_cuda_quantize_blockwise_is_the_cpus_bit_for_bit(signed: bool, n: int) -> None:
    """The standalone quantizer on CUDA (cuda/quant8.cu): the CPU's codes and absmax exactly
    (no arithmetic but the division by the absmax, IEEE on both), and its dequantized values,
    for heavy-tailed values with zeros, ties on thresholds, denormals, NaN and infinities among
    them."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) * torch.exp(4 * torch.randn(n, generator=g))
    if not signed:
        x = x.abs()
    if n > 300:
        x[100:110] = 0.0
        x[256:512] = 0.0  # a block of zeros: absmax 0, every value 0 / 0
        x[600] = float("nan")
        x[700] = float("inf")
        # Values exactly on thresholds between two codes (the tie keeps the lower code).
        m = gopt.dynamic_map(signed)
        x[1024:1279] = (m[:-1] + m[1:]) / 2
        x[1279] = 1.0
        # Blocks of tiny values down to denormals (the CPU divides those blocks exactly).
        x[1280:2048] = x[1280:2048] / x[1280:2048].abs().max() * 2.0**-133
    codes, absmax = gopt.quantize_blockwise(x, signed)
    codes_c, absmax_c = gopt.quantize_blockwise(x.cuda(), signed)
    assert codes_c.is_cuda
    assert torch.equal(codes_c.cpu(), codes)
    assert torch.equal(absmax_c.cpu(), absmax)
    if n > 300:
        # The block with inf has absmax inf, and code 0.0 times inf is NaN, which torch.equal
        # never equals: dequantize that block with a finite absmax.
        absmax[2] = 1.0
        absmax_c = absmax.cuda()
    values = gopt.dequantize_blockwise(codes, absmax, signed)
    values_c = gopt.dequantize_blockwise(codes_c, absmax_c, signed)
    assert torch.equal(values_c.cpu(), values)


def test_cuda_quantize_blockwise_refuses_mixed_devices() -> None:
    codes, absmax = gopt.quantize_blockwise(torch.randn(300, device="cuda"))
    with pytest.raises(TypeError, match="absmax"):
        gopt.dequantize_blockwise(codes, absmax.cpu())


def test_cuda_muon8bit_follows_the_cpu() -> None:
    """Muon8bit on CUDA: the 8-bit momentum's working copy made and stored back by the CUDA
    quantizer, the Newton-Schulz iteration on the GPU; its AdamW group through the engine's
    8-bit kernel. Ten steps end close to the CPU's (the orthogonalization's matmuls round
    differently on the two devices)."""
    shapes = [(64, 96), (8192,)]
    start, grads = _start(shapes, torch.float32, 14), _grads(shapes, 10, 15)
    runs = []
    for device in ("cuda", "cpu"):
        ps = [p.to(device, copy=True).requires_grad_(True) for p in start]
        opt = gopt.Muon8bit(
            [{"params": [ps[0]]}, {"params": [ps[1]], "use_muon": False}],
            lr=0.02,
            ns_dtype=torch.float32,
            min_8bit_size=1,
        )
        for gs in grads:
            for p, g in zip(ps, gs, strict=True):
                p.grad = g.to(device)
            opt.step()
        assert opt.state[ps[0]]["momentum_buffer"].dtype == torch.uint8
        assert opt.state[ps[1]]["exp_avg"].dtype == torch.uint8
        runs.append(ps)
    _assert_close_runs(runs[0], runs[1], start)


def test_cuda_8bit_found_inf_changes_nothing() -> None:
    params = [torch.randn(8192, device="cuda", requires_grad=True)]
    opt = gopt.AdamW8bit(params)
    params[0].grad = torch.randn(8192, device="cuda")
    opt.step()
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    p0 = params[0].detach().clone()
    params[0].grad = torch.randn(8192, device="cuda")
    opt.grad_scale = torch.ones(1, device="cuda")  # type: ignore[attr-defined]
    opt.found_inf = torch.ones(1, device="cuda")  # type: ignore[attr-defined]
    opt.step()
    assert torch.equal(params[0], p0)
    for k, v in opt.state[params[0]].items():
        assert torch.equal(v, before[k]), k


def test_cuda_8bit_capturable_is_the_host_step() -> None:
    """capturable=True (step counts on the device, read by the kernel) takes the same steps."""
    shapes = [(4097,), (300, 7)]
    start, grads = _start(shapes, torch.float32, 8), _grads(shapes, 3, 9)
    ours, opt_c = stepped_on(gopt.AdamW8bit, start, grads, "cuda", capturable=True, min_8bit_size=1)
    theirs, opt_h = stepped_on(gopt.AdamW8bit, start, grads, "cuda", min_8bit_size=1)
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for (_, st), (_, ref) in zip(opt_c.state.items(), opt_h.state.items(), strict=True):
        for key, value in st.items():
            if value.dtype == torch.uint8:
                assert_codes_agree(value, ref[key].cpu(), key)


def test_cuda_8bit_checkpoint_round_trip_exact() -> None:
    shapes = [(4097,), (33, 17)]
    start, grads = _start(shapes, torch.float32, 10), _grads(shapes, 6, 11)
    params, opt = stepped_on(gopt.AdamW8bit, start, grads[:3], "cuda", min_8bit_size=1)
    sd = copy.deepcopy(opt.state_dict())
    other = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = gopt.AdamW8bit(other, min_8bit_size=1)
    opt2.load_state_dict(sd)
    for gs in grads[3:]:
        for p, q, g in zip(params, other, gs, strict=True):
            p.grad, q.grad = g.cuda(), g.cuda()
        opt.step()
        opt2.step()
    for p, q in zip(params, other, strict=True):
        assert torch.equal(p, q)
        for key, value in opt.state[p].items():
            assert torch.equal(value, opt2.state[q][key]), key
