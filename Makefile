# Every target sets up the virtual environment first (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
EXP ?= rl_budget
ENV ?=
SWEEP ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint type bench clean

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU wheel that lies on this machine (a newer one would pull CUDA builds).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install the project with its dev tools

run: install  ## Run the default experiment (ARGS="key=value ..." for Hydra overrides)
	$(PY) -m testbed.cli $(ARGS)

test: install  ## Run the test suite (fast and slow tiers)
	$(PY) -m pytest -q $(ARGS)

test-fast: install  ## Run only the fast tier
	$(PY) -m pytest -q -m "not slow" $(ARGS)

lint: install  ## ruff
	$(VENV)/bin/ruff check testbed tests

type: install  ## mypy
	$(VENV)/bin/mypy testbed

bench: install  ## Benchmarks: ratios against a baseline measured in the same run
	$(PY) -m benchmarks.run $(ARGS)

clean:  ## Remove run outputs and caches (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf outputs multirun wandb .pytest_cache .mypy_cache .ruff_cache .cache
