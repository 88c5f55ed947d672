"""gradfuse.integrations imports no framework until a helper that needs it is called."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gradfuse

CHECK = r"""
import sys
import gradfuse, gradfuse.integrations
from gradfuse.integrations import transformers as gf_transformers, timm as gf_timm
assert callable(gf_transformers.use_fused_cross_entropy) and callable(gf_timm.register)
loaded = sorted(m for m in ("transformers", "timm", "accelerate", "lightning") if m in sys.modules)
assert not loaded, loaded
print("lazy ok")
"""


def test_integrations_import_no_framework() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(gradfuse.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lazy ok" in proc.stdout
