# The README's two commands:  `make bench` (the main job) and `make test`.
# Both set themselves up on a fresh clone: a virtual environment in .venv with the CPU build of
# torch, the build tools, and gradfuse built from this tree.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: help venv install bench test lint stubtest format dev dev-test gpu-check clean

help:
	@echo "make bench   - set up, build, run 'gradfuse bench' on this machine"
	@echo "make test    - set up, build, run the test suite"
	@echo "make lint    - ruff, clang-format, mypy"
	@echo "make stubtest - the _core stub (python/gradfuse/_core.pyi) against the built module"
	@echo "make dev     - incremental CPU-only build into python/gradfuse (PYTHONPATH=python)"

$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q scikit-build-core pybind11 ninja cmake numpy pytest hypothesis \
	    matplotlib ruff mypy clang-format build
	touch $@

venv: $(VENV)/.ready

# Rebuilds only what changed (scikit-build-core keeps build/<wheel tag>).
install: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps .

bench: install
	$(VENV)/bin/gradfuse bench $(BENCH_ARGS)

# stubtest first: it needs the built module, so it runs after `install` (not in `lint`).
test: install stubtest
	cd tests && ../$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check python tests $(wildcard examples)
	$(VENV)/bin/ruff format --check python tests $(wildcard examples)
	$(VENV)/bin/clang-format --dry-run -Werror $$(git ls-files 'src/*.h' 'src/*.cpp' 'cuda/*.cu' 'cuda/*.cuh')
	$(VENV)/bin/mypy

# python/gradfuse/_core.pyi must describe the module the build produced (names, signatures).
stubtest: install
	cd tests && ../$(PY) -m mypy.stubtest gradfuse._core

format: venv
	$(VENV)/bin/ruff format python tests $(wildcard examples)
	$(VENV)/bin/ruff check --fix python tests $(wildcard examples)
	$(VENV)/bin/clang-format -i $$(git ls-files 'src/*.h' 'src/*.cpp' 'cuda/*.cu' 'cuda/*.cuh')

# Developer loop: CMake straight into build/dev, the module copied next to the Python sources.
DEV_CUDA ?= OFF
dev:
	cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRADFUSE_CUDA=$(DEV_CUDA) \
	    -Dpybind11_DIR=$$($(PYTHON) -m pybind11 --cmakedir) -DPython_EXECUTABLE=$$(command -v $(PYTHON))
	cmake --build build/dev
	cp build/dev/_core*.so python/gradfuse/

dev-test: dev
	cd tests && PYTHONPATH=../python $(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# On a GPU machine (nothing is downloaded there): see benchmarks/gpu/README.md.
gpu-check:
	bash benchmarks/gpu/gpu_check.sh

clean:
	rm -rf build dist python/gradfuse/_core*.so
