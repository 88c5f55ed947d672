"""Every ```python block of the README's "Use it with training frameworks" section runs as
written, in one subprocess (each block in a fresh namespace) in a temporary directory, with
HF_HUB_OFFLINE=1: nothing may come from the Hugging Face Hub."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs_snippets import RUNNER, _blocks, _section

import gradfuse

HEADING = "Use it with training frameworks"
TIMEOUT_S = 600  # imports transformers and lightning (tens of seconds each on a loaded machine)


def _timm_imports() -> str | None:
    """None when timm imports here, else why not."""
    try:
        import timm.optim  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def test_section_has_every_framework() -> None:
    headings = re.findall(r"^### (.+)$", _section(HEADING), re.MULTILINE)
    for topic in ("Trainer", "accelerate", "Lightning", "timm"):
        assert any(topic in h for h in headings), f"no section on {topic}: {headings}"
    blocks = _blocks(HEADING)
    assert len(blocks) == len(headings)  # one executed snippet per section
    for b in blocks:
        assert "gradfuse" in b  # a snippet that left gradfuse out would prove nothing
    assert "![" in _section(HEADING)  # the example's figure


def _run(blocks: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    paths = []
    for i, b in enumerate(blocks):
        p = tmp_path / f"frameworks_block{i}.py"
        p.write_text(b)
        paths.append(str(p))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(
            [str(Path(gradfuse.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *paths],
        cwd=tmp_path,
        env=env,
        timeout=TIMEOUT_S,
        capture_output=True,
        text=True,
        check=False,
    )


def test_framework_snippets_run(tmp_path: Path) -> None:
    blocks = [b for b in _blocks(HEADING) if "timm" not in b]
    assert len(blocks) == 3
    proc = _run(blocks, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    for i in range(len(blocks)):
        assert f"block {i} ok" in proc.stdout
    assert (tmp_path / "accelerate_state").is_dir()
    assert (tmp_path / "lightning.ckpt").is_file()


def test_timm_snippet_runs(tmp_path: Path) -> None:
    why = _timm_imports()
    if why is not None:
        pytest.skip(f"timm does not import here ({why}): see the README's timm section")
    blocks = [b for b in _blocks(HEADING) if "timm" in b]
    assert len(blocks) == 1
    proc = _run(blocks, tmp_path)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
