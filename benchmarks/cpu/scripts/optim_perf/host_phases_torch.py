# Usage: PYTHONPATH=python python3 host_phases_torch.py 16M|model
# host_phases.py for torch's fused SGD: before torch._fused_sgd_, inside it, after it.
import sys, time, statistics, collections
import torch
from gradfuse.bench._case import ONE_16M, MODEL, _optimizer_inputs, _leaves
torch.set_num_threads(2)
size = {'16M': ONE_16M, 'model': MODEL}[sys.argv[1]]
p0, g0 = _optimizer_inputs(size.shapes, 'float32', 'cpu', 0)
ps = _leaves(p0, g0, clone_grads=False)
o = torch.optim.SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-4, fused=True); o.step(); o.step()
marks = {}
real = torch._fused_sgd_
def w(*a, **k):
    marks['in'] = time.perf_counter_ns(); r = real(*a, **k); marks['out'] = time.perf_counter_ns(); return r
torch._fused_sgd_ = w
acc = collections.defaultdict(list)
for r in range(31):
    time.sleep(0.02)
    t0 = time.perf_counter_ns(); o.step(); t1 = time.perf_counter_ns()
    acc['before'].append(marks['in'] - t0); acc['native'].append(marks['out'] - marks['in']); acc['after'].append(t1 - marks['out']); acc['total'].append(t1 - t0)
for k, v in acc.items(): print(f"{k:16s} {statistics.median(v)/1e3:8.0f} us")
