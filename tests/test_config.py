"""Build facts, threads, and the `gradfuse info` command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gradfuse


def test_show_config_prints_every_fact(capsys: pytest.CaptureFixture[str]) -> None:
    gradfuse.show_config()
    out = capsys.readouterr().out
    for key in (
        "gradfuse",
        gradfuse.__version__,
        "cpu isa in use",
        "cpu threads",
        "cuda compiled",
        "gpus",
    ):
        assert key in out


def test_cuda_available_is_a_bool_and_consistent() -> None:
    assert isinstance(gradfuse.cuda_available(), bool)
    if not gradfuse.cuda_compiled():
        assert gradfuse.cuda_available() is False


def test_import_does_not_import_torch() -> None:
    code = "import sys, gradfuse; gradfuse.cuda_available(); gradfuse.show_config(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_threads_settable() -> None:
    n = gradfuse.get_num_threads()
    assert n >= 1
    try:
        gradfuse.set_num_threads(1)
        assert gradfuse.get_num_threads() == 1
    finally:
        gradfuse.set_num_threads(n)
    with pytest.raises(ValueError, match="positive int"):
        gradfuse.set_num_threads(0)


def test_isa_selection() -> None:
    core = gradfuse._native.core()
    available = core.cpu_isas().split(",")
    assert "baseline" in available
    assert core.cpu_isa() == available[0]  # the widest is the default
    with pytest.raises(ValueError, match="unknown ISA"):
        core.set_cpu_isa("sse9")


def test_each_isa_runs_its_own_engine_copy() -> None:
    """The AVX-512 path must run code compiled for AVX-512: the per-ISA copies of the engine's
    templates have the same names unless GF_ISA_BEGIN separates them, and the linker then keeps
    one copy (the SSE one) for every ISA, which no correctness test can notice."""
    core = gradfuse._native.core()
    active = core.cpu_isa()
    try:
        for isa in core.cpu_isas().split(","):
            core.set_cpu_isa(isa)
            assert core.cpu_engine_isa() == isa
    finally:
        core.set_cpu_isa(active)


def _console_script() -> list[str]:
    """The installed `gradfuse` command of this interpreter's environment, if any."""
    import sysconfig
    from pathlib import Path

    script = Path(sysconfig.get_path("scripts")) / "gradfuse"
    return [str(script)] if script.exists() else []


@pytest.mark.parametrize("how", ["console script", "python -m gradfuse"])
def test_info_command(how: str) -> None:
    if how == "console script":
        argv = _console_script()
        if not argv:
            pytest.skip("gradfuse is not installed in this environment (a PYTHONPATH dev run)")
    else:
        argv = [sys.executable, "-m", "gradfuse"]
    out = subprocess.run([*argv, "info"], capture_output=True, text=True, check=True).stdout
    assert "cpu isa in use" in out
    assert gradfuse.__version__ in out


def test_module_links_neither_torch_nor_cudart() -> None:
    # DESIGN.md rule 1 and §5: no libtorch; cudart linked statically (only the driver is needed).
    import shutil

    if shutil.which("ldd") is None:
        pytest.skip("ldd is not available on this system")
    path = gradfuse._native.core().__file__
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    for lib in ("libtorch", "libc10", "libcudart", "libcuda.so"):
        assert lib not in out, f"{path} links {lib}:\n{out}"
