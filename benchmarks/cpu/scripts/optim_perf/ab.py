# Usage: PYTHONPATH=python python3 ab.py sgd|adamw 16M|model REPEATS
# In-process: gradfuse vs torch fused, interleaved, under two conditions:
#   quiet:       20 ms sleep before each sample (all thread pools asleep)
#   after-torch: a ~3 ms torch parallel op right before each sample (its OpenMP workers spin)
import sys, time, statistics
import torch, gradfuse
from gradfuse.bench._case import ONE_16M, MODEL, _optimizer_inputs, _leaves
torch.set_num_threads(gradfuse.get_num_threads())
op, sizename, R = sys.argv[1], sys.argv[2], int(sys.argv[3])
size = {'16M': ONE_16M, 'model': MODEL}[sizename]
kw = {'sgd': dict(lr=1e-3, momentum=0.9, weight_decay=1e-4), 'adamw': dict(lr=1e-3, weight_decay=1e-2)}[op]
G = {'sgd': gradfuse.optim.SGD, 'adamw': gradfuse.optim.AdamW}[op]
T = {'sgd': torch.optim.SGD, 'adamw': torch.optim.AdamW}[op]
p0, g0 = _optimizer_inputs(size.shapes, 'float32', 'cpu', 0)
steps = {}
for k in ('gf', 'fused'):
    ps = _leaves(p0, g0, clone_grads=False)
    o = G(ps, **kw) if k == 'gf' else T(ps, fused=True, **kw)
    o.step(); o.step(); steps[k] = o.step
other = torch.randn(1 << 21)
res = {}
for r in range(R):
    for mode in ('quiet', 'after-torch'):
        for k in (('gf', 'fused') if r % 2 == 0 else ('fused', 'gf')):
            time.sleep(0.02)
            if mode == 'after-torch':
                other.mul_(1.0000001)
            t0 = time.perf_counter(); steps[k](); res.setdefault((mode, k), []).append(time.perf_counter() - t0)
out = []
for mode in ('quiet', 'after-torch'):
    g = statistics.median(res[(mode, 'gf')]); f = statistics.median(res[(mode, 'fused')])
    out.append(f"{mode}: gf {g*1e3:.2f} fused {f*1e3:.2f} ratio(fused/gf) {f/g:.3f}")
print(f"{gradfuse.__file__.split('/gradfuse/')[0][-12:]:12s} {op} {sizename}: " + " | ".join(out), flush=True)
