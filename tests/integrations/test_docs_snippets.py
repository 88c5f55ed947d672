"""Every ```python block of the README's "Use it with" section runs as
written: one subprocess (a one-rank gloo group on 127.0.0.1 for the distributed ones) executes
the blocks in order, each in a fresh namespace, in a temporary directory."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import gradfuse

README = Path(__file__).resolve().parents[2] / "README.md"


def _section(heading: str = "Use it with") -> str:
    """The README's "## <heading>" section, up to the next "## " heading."""
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


TIMEOUT_S = 300  # compiles one step with inductor; minutes only on a heavily loaded machine

RUNNER = r"""
import sys
blocks = sys.argv[1:]
for i, path in enumerate(blocks):
    src = open(path).read()
    exec(compile(src, path, "exec"), {"__name__": "__main__"})
    print(f"block {i} ok", flush=True)
"""


def _blocks(heading: str = "Use it with") -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", _section(heading), re.MULTILINE | re.DOTALL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_doc_has_every_section() -> None:
    headings = re.findall(r"^### (.+)$", _section(), re.MULTILINE)
    for topic in (
        "DistributedDataParallel",
        "ZeroRedundancyOptimizer",
        "FSDP2",
        "torch.compile",
        "AMP",
        "checkpoints",
    ):
        assert any(topic in h for h in headings), f"no section on {topic}: {headings}"
    assert len(_blocks()) == len(headings)  # one executed snippet per section


def test_snippets_run(tmp_path: Path) -> None:
    blocks = _blocks()
    paths = []
    for i, b in enumerate(blocks):
        p = tmp_path / f"use_with_block{i}.py"
        p.write_text(b)
        paths.append(str(p))
    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        # The gradfuse this test imported (a source tree on PYTHONPATH, or the installed one),
        # whatever the working directory of the child.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(gradfuse.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, *paths],
        cwd=tmp_path,
        env=env,
        timeout=TIMEOUT_S,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    for i in range(len(blocks)):
        assert f"block {i} ok" in proc.stdout
    assert (tmp_path / "zero_checkpoint.pt").is_file()
    assert (tmp_path / "checkpoint.pt").is_file()


@pytest.mark.parametrize("section", ["DistributedDataParallel", "torch.compile"])
def test_snippets_use_gradfuse(section: str) -> None:
    # A snippet that silently used torch.optim would prove nothing.
    text = _section()
    part = text.split(f"### {section}", 1)[1].split("###", 1)[0]
    assert "gradfuse.optim." in part
