"""The CPU kernels' threads: one OpenMP runtime, torch's when torch is loaded (src/cpu/parallel.h).

Each check runs in a fresh interpreter, since what is loaded first, the thread count and forking
are per process. The scripts print one JSON line that the tests read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

import gradfuse

# Prelude of every script: the process's libgomp copies (from its memory maps) and threads.
PRELUDE = """
import json, os, sys
import numpy as np  # first: its BLAS is told to start no threads (OPENBLAS_NUM_THREADS=1)

def libgomps():
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "libgomp" in line.split()[-1]}
    return sorted({os.path.realpath(p) for p in paths})

def threads():
    return len(os.listdir("/proc/self/task"))

def sgd_numpy(n=1 << 20):
    from gradfuse.functional import sgd_
    p, g = [np.ones(n, np.float32)], [np.ones(n, np.float32)]
    sgd_(p, g, lr=0.5)  # above the engine's grain: one region on every thread asked for
    return float(p[0][0]) == 0.5 and float(p[0][-1]) == 0.5
"""

HIDE_TORCH = """
import importlib.abc
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def run_script(body: str, **env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if k not in ("GRADFUSE_NUM_THREADS",)}
    base["PYTHONPATH"] = os.path.dirname(os.path.dirname(gradfuse.__file__))
    base["OMP_NUM_THREADS"] = "2"  # a parallel team even on a 1-CPU runner
    base["OPENBLAS_NUM_THREADS"] = "1"  # numpy's BLAS threads would count in the thread checks
    base.update(env)
    r = subprocess.run(
        [sys.executable, "-c", PRELUDE + body],
        check=False,
        env=base,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def torch_lib_dir() -> str:
    import torch

    return os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))


GRADFUSE_FIRST = """
import gradfuse
gradfuse.get_num_threads()  # loads gradfuse._core (and the libgomp it links) before torch
assert "torch" not in sys.modules
first = libgomps()
import torch
torch.set_num_threads(2)
x = torch.ones(1 << 22)
x.mul_(2.0)  # a torch OpenMP region
before = threads()
ok = sgd_numpy()
print(json.dumps({"ok": ok, "gomp": libgomps(), "first": first, "before": before,
                  "after": threads()}))
"""

TORCH_FIRST = """
import torch
torch.set_num_threads(2)
x = torch.ones(1 << 22)
x.mul_(2.0)
before = threads()
ok = sgd_numpy()
print(json.dumps({"ok": ok, "gomp": libgomps(), "before": before, "after": threads()}))
"""


@pytest.mark.parametrize(
    "script", [GRADFUSE_FIRST, TORCH_FIRST], ids=["gradfuse-first", "torch-first"]
)
def test_one_libgomp_shared_with_torch(script: str) -> None:
    # One OpenMP runtime in the process, torch's own copy, whichever is imported first; and
    # gradfuse's regions run on the threads torch's regions started (no new threads appear).
    out = run_script(script)
    assert out["ok"]
    assert out.get("first", out["gomp"]) == out["gomp"]  # the same copy from the start
    assert len(out["gomp"]) == 1, out["gomp"]
    assert os.path.dirname(out["gomp"][0]) == torch_lib_dir(), out["gomp"]
    assert out["before"] >= 2  # torch's region started an OpenMP worker
    assert out["after"] == out["before"], "gradfuse started threads of its own"


def test_without_torch_the_builds_openmp_runs_alone() -> None:
    out = run_script(
        HIDE_TORCH
        + """
import gradfuse
gradfuse.set_num_threads(2)
before = threads()
ok = sgd_numpy()
print(json.dumps({"ok": ok, "gomp": libgomps(), "torch": "torch" in sys.modules,
                  "before": before, "after": threads()}))
"""
    )
    assert out["ok"]
    assert not out["torch"]
    assert len(out["gomp"]) == 1, out["gomp"]
    assert os.path.dirname(out["gomp"][0]) != torch_lib_dir()
    assert out["after"] > out["before"]  # the region ran on an OpenMP worker


def test_thread_count_follows_torch_unless_set() -> None:
    out = run_script(
        """
import torch, gradfuse
counts = {"default": [torch.get_num_threads(), gradfuse.get_num_threads()]}
torch.set_num_threads(1)
counts["torch 1"] = [torch.get_num_threads(), gradfuse.get_num_threads()]
torch.set_num_threads(3)
counts["torch 3"] = [torch.get_num_threads(), gradfuse.get_num_threads()]
gradfuse.set_num_threads(2)
counts["gradfuse 2"] = [torch.get_num_threads(), gradfuse.get_num_threads()]
torch.set_num_threads(1)
counts["then torch 1"] = [torch.get_num_threads(), gradfuse.get_num_threads()]
print(json.dumps(counts))
"""
    )
    assert out["default"] == [2, 2]  # OMP_NUM_THREADS=2 for both
    assert out["torch 1"] == [1, 1]
    assert out["torch 3"] == [3, 3]
    assert out["gradfuse 2"] == [3, 2]  # gradfuse's own count leaves torch's alone
    assert out["then torch 1"] == [1, 2]  # and, once set, no longer follows it


def test_environment_variable_sets_the_count() -> None:
    out = run_script(
        """
import torch, gradfuse
torch.set_num_threads(1)
print(json.dumps({"gradfuse": gradfuse.get_num_threads(), "ok": sgd_numpy()}))
""",
        GRADFUSE_NUM_THREADS="3",
    )
    assert out == {"gradfuse": 3, "ok": True}


# A forked child of a process whose OpenMP runtime has started threads: libgomp's parallel
# regions would wait there forever for workers that exist only in the parent (torch's own ops
# hang in such a child unless set to one thread). gradfuse runs on the calling thread there.
FORK_AFTER_THREADS = """
import time
import torch, gradfuse
torch.set_num_threads(2)
x = torch.ones(1 << 22)
x.mul_(2.0)
assert sgd_numpy()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    ok = sgd_numpy() and sgd_numpy(1 << 16)
    os.write(w, json.dumps({"ok": ok, "threads": gradfuse.get_num_threads()}).encode())
    os._exit(0)
os.close(w)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)  # hung: never leave it behind
    os.waitpid(pid, 0)
    print(json.dumps({"hung": True}))
    sys.exit(0)
child = json.loads(os.read(r, 4096).decode())
print(json.dumps({"hung": False, "status": os.waitstatus_to_exitcode(status), **child,
                  "parent_ok": sgd_numpy(), "parent_threads": gradfuse.get_num_threads()}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_after_openmp_threads_runs_serially() -> None:
    out = run_script(FORK_AFTER_THREADS)
    assert out["hung"] is False
    assert out["status"] == 0
    assert out["ok"]
    assert out["threads"] == 1
    assert out["parent_ok"]  # the parent keeps its threads
    assert out["parent_threads"] == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_of_a_single_threaded_parent_keeps_its_threads() -> None:
    # A child forked before any thread existed (a multiprocessing pool started first) has no
    # stale OpenMP pool: it runs its regions on threads of its own.
    out = run_script(
        HIDE_TORCH
        + """
import time
import gradfuse
gradfuse.set_num_threads(2)
assert threads() == 1
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    before = threads()
    ok = sgd_numpy()
    os.write(w, json.dumps({"ok": ok, "n": gradfuse.get_num_threads(), "before": before,
                            "after": threads()}).encode())
    os._exit(0)
os.close(w)
_, status = os.waitpid(pid, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status),
                  **json.loads(os.read(r, 4096).decode())}))
"""
    )
    assert out["status"] == 0
    assert out["ok"]
    assert out["n"] == 2
    assert out["after"] > out["before"]
