"""Packaging: one version source, py.typed, and (slow) `python -m build` -> sdist + wheel, the
wheel installed into a fresh virtual environment and smoke-tested there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

import gradfuse

ROOT = Path(__file__).resolve().parents[2]
VERSION_FILE = ROOT / "python" / "gradfuse" / "_version.py"
# A full CPU build of the extension (3 ISA variants) from the sdist: minutes on 2 loaded cores.
BUILD_TIMEOUT_S = 1800


def _version_in_file() -> str:
    m = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.MULTILINE)
    assert m, f"no __version__ line in {VERSION_FILE}"
    return m.group(1)


def test_one_version_source() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    regex = pyproject["tool"]["scikit-build"]["metadata"]["version"]
    assert regex["input"] == "python/gradfuse/_version.py"
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "python/gradfuse/_version.py" in cmake  # plain CMake builds read the same file
    assert re.search(r"project\(gradfuse VERSION \$\{SKBUILD_PROJECT_VERSION\}", cmake)
    assert gradfuse.__version__ == _version_in_file()


def test_package_is_typed() -> None:
    pkg = Path(gradfuse.__file__).parent
    assert (pkg / "py.typed").is_file()
    assert (pkg / "_core.pyi").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "Typing :: Typed" in pyproject["project"]["classifiers"]


SMOKE = r"""
import sys, numpy as np, torch, gradfuse
from gradfuse.functional import sgd_
from gradfuse._tolerances import TRAJECTORY, assert_close
assert gradfuse.__file__.startswith(sys.prefix), gradfuse.__file__  # the installed copy
print("version", gradfuse.__version__)
w = torch.randn(4097, dtype=torch.float64)
a, b = w.clone().requires_grad_(), w.clone().requires_grad_()
oa = gradfuse.optim.SGD([a], lr=0.1, momentum=0.9, nesterov=True)
ob = torch.optim.SGD([b], lr=0.1, momentum=0.9, nesterov=True)
for _ in range(3):
    g = torch.randn_like(w)
    a.grad, b.grad = g.clone(), g.clone()
    oa.step(); ob.step()
assert_close(a, b, TRAJECTORY[torch.float64], 'smoke: SGD vs torch')
p = [np.ones(5, np.float32)]
sgd_(p, [np.full(5, 2.0, np.float32)], lr=0.25)
assert (p[0] == 0.5).all(), p
assert not gradfuse.cuda_compiled()  # built with GRADFUSE_CUDA=OFF
print("smoke ok")
"""


@pytest.mark.slow
def test_build_sdist_and_wheel_then_install_in_fresh_venv(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="`python -m build` needs the 'build' package (make venv)")
    dist = tmp_path / "dist"
    env = {**os.environ, "GRADFUSE_CUDA": "OFF", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    # --no-isolation: the build tools installed here (scikit-build-core, pybind11, cmake,
    # ninja) are used; nothing is downloaded. Builds the sdist, then the wheel from the sdist.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        env=env,
        check=True,
        timeout=BUILD_TIMEOUT_S,
        capture_output=True,
    )
    version = _version_in_file()
    sdists = list(dist.glob("gradfuse-*.tar.gz"))
    wheels = list(dist.glob("gradfuse-*.whl"))
    assert [s.name for s in sdists] == [f"gradfuse-{version}.tar.gz"]
    assert len(wheels) == 1
    assert wheels[0].name.startswith(f"gradfuse-{version}-")

    with tarfile.open(sdists[0]) as tar:
        names = set(tar.getnames())
    top = f"gradfuse-{version}"
    for f in (
        "pyproject.toml",
        "CMakeLists.txt",
        "README.md",
        "python/gradfuse/_version.py",
        "python/gradfuse/py.typed",
        "src/gradfuse/math/sgd.h",
        "cuda/multi_tensor_apply.cuh",
    ):
        assert f"{top}/{f}" in names, f
    assert not any(n.endswith(".so") for n in names), "a built module leaked into the sdist"

    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"gradfuse-{version}.dist-info/METADATA").decode()
        entry_points = whl.read(f"gradfuse-{version}.dist-info/entry_points.txt").decode()
    assert re.search(rf"^Version: {re.escape(gradfuse.__version__)}$", meta, re.MULTILINE)
    assert "gradfuse/py.typed" in names
    assert "gradfuse/_core.pyi" in names
    assert sum(n.startswith("gradfuse/_core") and n.endswith(".so") for n in names) == 1
    # No OpenMP runtime of its own: _core links libgomp.so.1 by soname, torch's or the system's.
    assert not [n for n in names if "libgomp" in n or "libomp" in n], names
    assert "gradfuse = gradfuse._cli:main" in entry_points

    # A fresh environment; torch and numpy come from this interpreter's site-packages. When this
    # interpreter is itself a virtual environment (make venv's .venv), system_site_packages
    # reaches only the base interpreter's, so a .pth file names this one's as well (after the
    # fresh environment's own, where gradfuse is installed).
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parents = [p for p in sys.path if p.endswith("site-packages")]
    (Path(purelib) / "_parent_site_packages.pth").write_text("\n".join(parents) + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
        env=env,
        check=True,
        timeout=600,
    )
    smoke = subprocess.run(
        [str(py), "-c", SMOKE],
        env=env,
        cwd=tmp_path,  # not the source tree: the installed package must be the one imported
        check=False,
        timeout=600,
        capture_output=True,
        text=True,
    )
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    out = smoke.stdout
    assert f"version {version}" in out, out
    assert "smoke ok" in out, out
    assert (env_dir / "bin" / "gradfuse").is_file()  # the console script
    if "gradfuse/bench/__init__.py" in names:  # the CLI's `info` needs gradfuse.bench
        info = subprocess.run(
            [str(env_dir / "bin" / "gradfuse"), "info"],
            env=env,
            cwd=tmp_path,
            check=True,
            timeout=600,
            capture_output=True,
            text=True,
        ).stdout
        assert version in info, info
