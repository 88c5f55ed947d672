# The README's two commands:  `make bench` (the main job) and `make test`.
# Both set themselves up on a fresh clone: a virtual environment in .venv with the CPU build of
# torch, the build tools, and gradfuse built from this tree.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# The training frameworks the tests run gradfuse under (tests/integrations/test_frameworks_*),
# and tqdm (the bench's and the examples' progress bar); the same pins as pyproject's test extra.
# Installed with TORCH_SPEC so that pip keeps the CPU torch. timm is not here: see TIMM_SPEC.
# PEERS: the optimizer packages the tests and the bench compare against (all run on the CPU).
FRAMEWORKS ?= transformers==5.25.0 accelerate==1.16.0 lightning==2.6.6 tqdm==4.70.1
PEERS ?= schedulefree==1.4.1 pytorch-optimizer==4.1.0 bitsandbytes==0.50.2 heavyball==3.2.1 \
    torchao==0.18.0
# timm (tests/integrations/test_frameworks_timm.py), installed on its own with --no-deps: it
# requires torchvision, whose PyPI wheels are CUDA builds that do not load beside the CPU torch
# (and pip could swap the CPU torch for a CUDA one to satisfy them). timm's optimizer factory
# never calls torchvision, so the test imports timm over a stub of it
# (tests/integrations/_torchvision_stub.py). timm's other requirements (pyyaml, huggingface_hub,
# safetensors) come with transformers (FRAMEWORKS), and Pillow, which timm imports (torchvision
# would bring it), with matplotlib.
TIMM_SPEC ?= timm==1.0.31
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# pytest-xdist worker processes for `make test`, `make dev-test` and `make sanitize` (2: CI's
# cores; the tests are independent: seeds per test id, TCP stores on free ports, thread counts
# set and restored per test). TEST_WORKERS=0 runs them in this one process.
TEST_WORKERS ?= 2
# The test runs' OpenMP threads sleep while they wait (libgomp's default spins first): two
# workers with two threads each oversubscribe CI's two cores, and a thread spinning at a
# region's barrier holds the core its team's late thread needs (golden trajectories on a loaded
# machine: 2-thread runs 10.5 -> 3.3 s). Only waiting changes, never a result; the benchmarks
# keep the runtime's default.
TEST_ENV := OMP_WAIT_POLICY=PASSIVE
# The CUDA architectures `make install` (so `make test`, `make bench`) compiles the kernels for.
# Empty: CMakeLists.txt's list, the wheel's (80-real;90-real;90-virtual). CI, which has no GPU
# and only checks that the kernels compile, sets one (.ci/run); always passed, so a build dir
# configured with another list goes back to the default on the next plain `make install`.
CUDA_ARCHITECTURES ?=

.PHONY: help venv install bench test lint stubtest format dev dev-test sanitize gpu-check clean

help:
	@echo "make bench   - set up, build, run 'gradfuse bench' on this machine"
	@echo "make test    - set up, build, run the test suite"
	@echo "make lint    - ruff, clang-format, mypy"
	@echo "make stubtest - the _core stub (python/gradfuse/_core.pyi) against the built module"
	@echo "make dev     - incremental CPU-only build into python/gradfuse (PYTHONPATH=python)"
	@echo "make sanitize - CPU build with ASan+UBSan (build/asan), CPU tests run under it"

$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q scikit-build-core pybind11 ninja cmake numpy pytest pytest-xdist==3.8.0 \
	    hypothesis matplotlib scikit-learn ruff mypy clang-format build
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(FRAMEWORKS) $(PEERS)
	$(PY) -m pip install -q --no-deps "$(TIMM_SPEC)"
	touch $@

venv: $(VENV)/.ready

# Rebuilds only what changed (scikit-build-core keeps build/<wheel tag>).
install: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps \
	    -Ccmake.define.CMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHITECTURES)" .

bench: install
	$(VENV)/bin/gradfuse bench $(BENCH_ARGS)

# stubtest first: it needs the built module, so it runs after `install` (not in `lint`).
test: install stubtest
	cd tests && $(TEST_ENV) ../$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

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
	cd tests && $(TEST_ENV) PYTHONPATH=../python $(PYTHON) -m pytest -q -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS)

# AddressSanitizer + UndefinedBehaviorSanitizer: _core built into build/asan (CPU only), a copy of
# the package with that module in build/asan/pkg, and the CPU tests run with the ASan runtime
# preloaded (python itself is not instrumented, so the runtime must come first; libstdc++ is
# preloaded too, or ASan cannot find the real __cxa_throw and aborts on the first C++ exception;
# the leak checker would report the interpreter's own never-freed objects, hence detect_leaks=0).
# Any ASan or UBSan finding aborts the run; its report is printed from build/asan/report.*.
# SANITIZE_TESTS picks the tests (default: all but slow and cuda, and not the training frameworks:
# they run gradfuse through the same kernels as the rest, and would only add the frameworks'
# own native libraries, uninstrumented, to the run).
SAN_DIR ?= build/asan
SANITIZE_TESTS ?= -m "not slow and not cuda" --ignore-glob='*test_frameworks_*' \
    --ignore-glob='*test_train_causal_lm*'
SAN_REPORT = $(CURDIR)/$(SAN_DIR)/report
SAN_ENV = LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
    ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0:abort_on_error=1:detect_stack_use_after_return=1:log_path=$(SAN_REPORT) \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_REPORT) GRADFUSE_SANITIZED=1
# One ISA copy (baseline) in this build: the three copies are the same source, the sanitizers
# check its memory accesses and arithmetic, and ASan+UBSan costs about 4 CPU minutes per copy of
# adam.cpp even at -O1, the level CMakeLists.txt picks for sanitized builds (the AVX2/AVX-512
# copies run under the normal test suite).
sanitize:
	cmake -S . -B $(SAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DGRADFUSE_CUDA=OFF \
	    -DGRADFUSE_SANITIZE=ON -DGRADFUSE_CPU_ISAS=baseline \
	    -Dpybind11_DIR=$$($(PYTHON) -m pybind11 --cmakedir) -DPython_EXECUTABLE=$$(command -v $(PYTHON))
	cmake --build $(SAN_DIR)
	rm -rf $(SAN_DIR)/pkg $(SAN_REPORT).* && mkdir -p $(SAN_DIR)/pkg
	cp -r python/gradfuse $(SAN_DIR)/pkg/ && rm -f $(SAN_DIR)/pkg/gradfuse/_core*.so
	cp $(SAN_DIR)/_core*.so $(SAN_DIR)/pkg/gradfuse/
	cd tests && $(SAN_ENV) $(TEST_ENV) PYTHONPATH=../$(SAN_DIR)/pkg $(PYTHON) -m pytest -q -p no:cacheprovider \
	    -n $(TEST_WORKERS) $(SANITIZE_TESTS) $(PYTEST_ARGS) || { cat $(SAN_REPORT).* 2>/dev/null; exit 1; }
	@if ls $(SAN_REPORT).* >/dev/null 2>&1; then cat $(SAN_REPORT).*; exit 1; fi

# On a GPU machine (nothing is downloaded there): benchmarks/gpu/gpu_check.sh says what it runs.
gpu-check:
	bash benchmarks/gpu/gpu_check.sh

clean:
	rm -rf build dist python/gradfuse/_core*.so
