# Usage: PYTHONPATH=python python3 placement.py 16M|model REPEATS
# The native SGD call alone (Python checks done once, outside the clock) against torch fused,
# each sample after a 20 ms pause (every pool asleep): sorted samples show the bimodal tail
# a worker woken onto the caller's CPU causes (src/cpu/parallel.cpp, keep_workers_off).
import sys, time, statistics, os
import torch, gradfuse
from gradfuse import _native
from gradfuse.functional import _multi_tensor as mt
from gradfuse.bench._case import ONE_16M, MODEL, _optimizer_inputs, _leaves
torch.set_num_threads(2)
size = {'16M': ONE_16M, 'model': MODEL}[sys.argv[1]]
R = int(sys.argv[2])
p0, g0 = _optimizer_inputs(size.shapes, 'float32', 'cpu', 0)
ps = _leaves(p0, g0, clone_grads=False)
o = gradfuse.optim.SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-4); o.step()
cap = {}
import gradfuse.functional._optim as fo
orig = fo.group
fo.group = lambda *a, **k: cap.setdefault('g', orig(*a, **k)); o.step(); fo.group = orig
g = cap['g'][0]; core = _native.core()
def native():
    core.optimizer_step("sgd", g.slots, g.numels, g.dtype_code, g.device, g.stream, [1e-3, 0.9, 0.0, 1e-4], {"nesterov": 0, "maximize": 0, "first_step": 0})
ps2 = _leaves(p0, g0, clone_grads=False)
t = torch.optim.SGD(ps2, fused=True, lr=1e-3, momentum=0.9, weight_decay=1e-4); t.step()
res = {'native': [], 'fused': []}
for r in range(R):
    for k, f in (('native', native), ('fused', t.step)):
        time.sleep(0.02)
        t0 = time.perf_counter(); f(); res[k].append((time.perf_counter() - t0) * 1e3)
for k, v in res.items():
    v = sorted(v); print(k, 'med %.2f' % statistics.median(v), ' '.join('%.1f' % x for x in v[::max(1, len(v)//15)]))
