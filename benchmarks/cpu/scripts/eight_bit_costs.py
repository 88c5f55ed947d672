"""Per-element costs of the 8-bit step's parts on one thread (benchmarks/cpu/2026-12-06-8bit.md):
quantize and dequantize 4M values alone (from memory, new outputs each call) and 256K values (in
cache, as the step's tiles are), a whole AdamW8bit step, torch's fused float32 AdamW step and
gradfuse's float32 AdamW step, in ns per element.

    OMP_NUM_THREADS=1 PYTHONPATH=python python benchmarks/cpu/scripts/eight_bit_costs.py
"""

import time
from functools import partial

import torch

import gradfuse.optim as gopt
from gradfuse import _native

torch.set_num_threads(1)
n = 1 << 22
x = torch.randn(n) * torch.exp(torch.randn(n))
ax = x.abs()


def per_element(f, repeat: int = 10, size: int = n) -> float:
    f()
    start = time.perf_counter()
    for _ in range(repeat):
        f()
    return (time.perf_counter() - start) / repeat / size * 1e9


codes, absmax = gopt.quantize_blockwise(x)
out = torch.empty(n)
print("quantize (signed map)   ", per_element(lambda: gopt.quantize_blockwise(x)))
print("quantize (unsigned map) ", per_element(lambda: gopt.quantize_blockwise(ax, False)))
print("dequantize              ", per_element(lambda: gopt.dequantize_blockwise(codes, absmax)))
print("copy (4 B in, 4 B out)  ", per_element(lambda: out.copy_(x)))
# In cache: 256K values (1 MiB) into buffers allocated once, through the native calls (the
# Python helpers allocate their outputs, whose first touch would dominate).
m = 1 << 18
core = _native.core()
xs, axs, ys = x[:m].clone(), ax[:m].clone(), torch.empty(m)
cs, ams = torch.empty(m, dtype=torch.uint8), torch.empty(m // 256)
args = (cs.data_ptr(), ams.data_ptr(), m, m // 256)
for name, src, signed in (("signed", xs, True), ("unsigned", axs, False)):
    quantize = partial(core.blockwise8, src.data_ptr(), *args, signed, True)
    print(f"in cache: quantize ({name})", per_element(quantize, 200, m))
    dequantize = partial(core.blockwise8, ys.data_ptr(), *args, signed, False)
    print(f"in cache: dequantize ({name})", per_element(dequantize, 200, m))
p = torch.randn(n, requires_grad=True)
p.grad = torch.randn(n) * 0.01
eight = gopt.AdamW8bit([p])
print("AdamW8bit step          ", per_element(eight.step))
q = torch.randn(n, requires_grad=True)
q.grad = p.grad.clone()
print("torch fused AdamW step  ", per_element(torch.optim.AdamW([q], fused=True).step))
print("gradfuse AdamW step     ", per_element(gopt.AdamW([q]).step))
