# Usage: PYTHONPATH=python python3 ovh.py sgd adamw
# Host overhead: the model's 148 tensors cut to <= 64 elements each, so a step is nearly all
# Python + binding work. gradfuse vs torch fused (and foreach), interleaved, median of 300.
import sys, time, statistics
import torch, gradfuse
from gradfuse.bench._case import MODEL
torch.set_num_threads(gradfuse.get_num_threads())
shapes = [(min(64, s[0]),) for s in MODEL.shapes]
def mk(op, kind):
    ps = [torch.randn(s).requires_grad_() for s in shapes]
    for p in ps: p.grad = torch.randn_like(p)
    if op == 'sgd':
        kw = dict(lr=1e-3, momentum=0.9, weight_decay=1e-4); G, T = gradfuse.optim.SGD, torch.optim.SGD
    else:
        kw = dict(lr=1e-3, weight_decay=1e-2); G, T = gradfuse.optim.AdamW, torch.optim.AdamW
    o = G(ps, **kw) if kind == 'gf' else T(ps, fused=True, **kw) if kind == 'fused' else T(ps, foreach=True, **kw)
    o.step(); o.step(); return o.step
for op in sys.argv[1:]:
    fs = {k: mk(op, k) for k in ('gf', 'foreach', 'fused')}
    s = {k: [] for k in fs}
    for r in range(100):
        for k, f in fs.items():
            t0 = time.perf_counter(); f(); s[k].append(time.perf_counter() - t0)
    m = {k: statistics.median(v) * 1e6 for k, v in s.items()}
    print(f"{op}: 148 tiny tensors, us/step " + " ".join(f"{k}={v:.0f}" for k, v in m.items()) + f"  gf/foreach={m['gf']/m['foreach']:.2f} gf/fused={m['gf']/m['fused']:.2f}", flush=True)
