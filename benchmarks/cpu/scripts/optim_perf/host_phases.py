# Usage: PYTHONPATH=python python3 host_phases.py 16M|model
# Where one gradfuse SGD step's host time goes, each step after a 20 ms pause: before the
# checks, the checks (_core.prepare_plain), up to the kernel, the kernel, after it.
import sys, time, statistics, collections
import torch, gradfuse
from gradfuse import _native
from gradfuse.bench._case import ONE_16M, MODEL, _optimizer_inputs, _leaves
import gradfuse.optim.sgd as osgd, gradfuse.functional._optim as fo, gradfuse.functional._multi_tensor as mt
torch.set_num_threads(2)
size = {'16M': ONE_16M, 'model': MODEL}[sys.argv[1]]
p0, g0 = _optimizer_inputs(size.shapes, 'float32', 'cpu', 0)
ps = _leaves(p0, g0, clone_grads=False)
real = _native.core()
marks = {}
class P:
    def __getattr__(self, n):
        f = getattr(real, n)
        if n not in ('sgd', 'prepare_plain'): return f
        def w(*a, **k):
            marks[n + '_in'] = time.perf_counter_ns(); r = f(*a, **k); marks[n + '_out'] = time.perf_counter_ns(); return r
        return w
fo._native = type('N', (), {'core': staticmethod(lambda: P())})
import gradfuse._buffers as gb
gb_core = P()
import gradfuse._native as gn
o = gradfuse.optim.SGD(ps, lr=1e-3, momentum=0.9, weight_decay=1e-4); o.step(); o.step()
gn.core = lambda: gb_core
acc = collections.defaultdict(list)
for r in range(31):
    time.sleep(0.02)
    t0 = time.perf_counter_ns(); o.step(); t1 = time.perf_counter_ns()
    acc['before_prepare'].append(marks['prepare_plain_in'] - t0)
    acc['prepare_plain'].append(marks['prepare_plain_out'] - marks['prepare_plain_in'])
    acc['prepare->sgd'].append(marks['sgd_in'] - marks['prepare_plain_out'])
    acc['native'].append(marks['sgd_out'] - marks['sgd_in'])
    acc['after'].append(t1 - marks['sgd_out'])
    acc['total'].append(t1 - t0)
for k, v in acc.items(): print(f"{k:16s} {statistics.median(v)/1e3:8.0f} us")
