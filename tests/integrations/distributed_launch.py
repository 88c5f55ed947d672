"""Start a worker script on WORLD CPU processes (gloo), for the multi-process tests.

The rendezvous store lives in the test's process, on a free loopback port chosen by the OS;
each rank is started as ``python WORKER RANK WORLD STORE_PORT OUT_DIR *ARGS`` with its output in
a log file, under a hard time limit: a hang (a rank waiting for the other) fails the test instead
of stalling the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

import gradfuse


def launch(worker: Path, world: int, out: Path, args: list[str], timeout_s: float) -> list[Any]:
    """Run ``worker`` on ``world`` ranks; returns what each rank saved to ``out/rank{r}.pt``."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",  # gloo's own connections stay on the loopback device
        "OMP_NUM_THREADS": "1",
        "GRADFUSE_NUM_THREADS": "1",
        # The gradfuse this test imported (a source tree on PYTHONPATH, or the installed one),
        # whatever the working directory of the child.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(gradfuse.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    logs = [out / f"rank{r}.log" for r in range(world)]
    procs = []
    for r in range(world):
        with logs[r].open("w") as log:  # a file, not a pipe: a chatty rank never blocks
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(worker),
                        str(r),
                        str(world),
                        str(store.port),
                        str(out),
                        *args,
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + timeout_s
    try:
        # Wait for all ranks; stop at the first failure (the other would wait for it forever).
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.returncode for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    report = "\n".join(
        f"--- rank {r} (exit {p.returncode}):\n{logs[r].read_text()[-3000:]}"
        for r, p in enumerate(procs)
    )
    if any(p.returncode for p in procs):
        timed_out = time.monotonic() > deadline
        pytest.fail(
            (f"the {world}-process run did not finish within {timeout_s} s\n" if timed_out else "")
            + report
        )
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
