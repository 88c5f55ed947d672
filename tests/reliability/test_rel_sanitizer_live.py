"""Under `make sanitize` (GRADFUSE_SANITIZED=1): prove the sanitizers are live in this very
build, so a clean sanitizer run means something. A child process hands the kernel, through the
private binding (the Python layer would refuse), a size past the end of its array and then a
misaligned pointer; ASan and UBSan must each stop it with their report.

Outside the sanitizer run these tests skip: an unsanitized build would really write past the end.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import gradfuse

pytestmark = pytest.mark.skipif(
    not os.environ.get("GRADFUSE_SANITIZED"),
    reason="only meaningful in the sanitizer build (make sanitize)",
)

PROBE = """
import numpy as np, gradfuse
core = gradfuse._native.core()
kind = {kind!r}
if kind == "overflow":
    p, g = np.ones(64, np.float32), np.ones(64, np.float32)
    ptrs, n = [[p.ctypes.data], [g.ctypes.data]], 65  # one element past the end
else:
    raw = np.zeros(4 * 9, np.uint8)
    ptrs, n = [[raw.ctypes.data + 1], [raw.ctypes.data + 17]], 4  # not float-aligned
core.optimizer_step("sgd", ptrs, [n], 0, -1, 0, [0.1, 0.0, 0.0, 0.0],
                   {{"nesterov": 0, "maximize": 0, "first_step": 0}})
print("NO REPORT")
"""


@pytest.mark.parametrize(
    ("kind", "report"),
    [
        ("overflow", "AddressSanitizer: heap-buffer-overflow"),
        ("misaligned", "runtime error: load of misaligned address"),
    ],
)
def test_sanitizer_reports_a_deliberate_error(kind: str, report: str) -> None:
    env = dict(os.environ)
    # Reports to stderr here (not the run's report file, which would fail `make sanitize`).
    env["ASAN_OPTIONS"] = "detect_leaks=0:verify_asan_link_order=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(gradfuse.__file__))
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(kind=kind)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0, r.stdout + r.stderr
    assert "NO REPORT" not in r.stdout
    assert report in r.stderr, r.stderr[-3000:]
