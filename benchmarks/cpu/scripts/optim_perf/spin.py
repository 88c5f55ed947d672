# Process CPU time in the 60 ms after one torch op: how long libgomp's workers spin.
# Usage: python3 spin.py   (compare OMP_WAIT_POLICY=PASSIVE python3 spin.py)
import time, torch, os
torch.set_num_threads(2)
a = torch.randn(1 << 22)
def cpu(): return time.process_time()
for trial in range(3):
    time.sleep(0.3)
    a.mul_(1.0001)
    t0 = time.perf_counter(); c0 = cpu(); out = []
    while time.perf_counter() - t0 < 0.06:
        time.sleep(0.005)
        out.append(round((cpu() - c0) * 1e3, 1))
    print('process cpu ms at 5ms steps after a torch op:', out)
