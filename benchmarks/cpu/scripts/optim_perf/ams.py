# Usage: PYTHONPATH=python python3 ams.py THREADS REPEATS
# Adam(amsgrad=True) 16M float32, gradfuse vs torch fused, interleaved, threads from argv.
import sys, time, statistics
import torch, gradfuse
th = int(sys.argv[1]); R = int(sys.argv[2])
gradfuse.set_num_threads(th); torch.set_num_threads(th)
N = 1 << 24
S = {}
for k in ('gf', 'fused'):
    torch.manual_seed(0)
    p = torch.randn(N).requires_grad_(); p.grad = torch.randn(N)
    o = gradfuse.optim.Adam([p], lr=1e-3, amsgrad=True) if k == 'gf' else torch.optim.Adam([p], lr=1e-3, amsgrad=True, fused=True)
    o.step(); o.step(); S[k] = o.step
res = {k: [] for k in S}
for r in range(R):
    for k in (('gf', 'fused') if r % 2 == 0 else ('fused', 'gf')):
        time.sleep(0.02); t0 = time.perf_counter(); S[k](); res[k].append(time.perf_counter() - t0)
g, f = statistics.median(res['gf']), statistics.median(res['fused'])
print(f"{gradfuse.__file__.split('/gradfuse/')[0][-12:]:12s} adam_amsgrad 16M threads {th}: gf {g*1e3:.2f} ms fused {f*1e3:.2f} ms ratio(fused/gf) {f/g:.3f}", flush=True)
