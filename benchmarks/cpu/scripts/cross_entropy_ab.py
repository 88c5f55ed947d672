"""One process: fwd+bwd medians of gradfuse.nn.functional.cross_entropy and torch's, for the
shapes below, at the given thread count. Run once per build (PYTHONPATH picks the build)."""

import json
import sys
import time

import torch

import gradfuse
import gradfuse.nn.functional as gF

th = int(sys.argv[1])
torch.set_num_threads(th)
gradfuse.set_num_threads(th)
shapes = [
    ((65536, 10), torch.float32),
    ((65536, 10), torch.bfloat16),
    ((327680, 2), torch.float32),
    ((43690, 15), torch.float32),
    ((40960, 16), torch.float32),
    ((8, 10, 128, 128), torch.float32),
    ((16, 21, 64, 64), torch.float32),
]


def med(f, x, y, n=25):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        l = f(x, y)
        torch.autograd.grad(l, x)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[n // 2] * 1e3


out = {}
torch.manual_seed(0)
for shape, dt in shapes:
    C = shape[1]
    x = torch.randn(shape).to(dt).requires_grad_()
    y = torch.randint(0, C, (shape[0], *shape[2:]))
    g = min(med(gF.cross_entropy, x, y) for _ in range(2))
    t = min(med(torch.nn.functional.cross_entropy, x, y) for _ in range(2))
    out[f"{'x'.join(map(str, shape))} {str(dt)[6:]}"] = (g, t)
print(json.dumps(out))
