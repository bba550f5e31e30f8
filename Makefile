# Every target sets up the virtual environment first: once, and again only when the lock changes.
# It installs exactly requirements.lock (every package pinned, with hashes): the same numbers next month.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
LOCK := requirements.lock
STAMP := $(VENV)/.installed
# The lock pins the CPU build of torch (torch==2.13.0+cpu); this machine keeps that wheel in /opt/wheels.
# Elsewhere it comes from PyTorch's CPU index (a plain PyPI torch would be a multi-GB CUDA build).
WHEELS ?= /opt/wheels
TORCH_SOURCE := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu)
ARGS ?=
EXP ?= rl_budget
ENV ?=
SWEEP ?=

.DEFAULT_GOAL := help
.PHONY: help install lock run test test-fast lint format type check bench clean report study study-all sweep

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# uv installs the lock in ~15 s from an empty cache, pip in ~85 s (measured here; README "Installs").
$(STAMP): $(LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) pip sync -q --python $(PY) $(TORCH_SOURCE) --require-hashes $(LOCK)
	$(UV) pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install exactly requirements.lock, then the project (no dependencies)

# Deliberately only: resolves pyproject.toml's ranges anew (newest versions that fit) into requirements.lock.
# The lock holds the extras dev (test tools) and ray (the Ray launcher, tested in CI on a local Ray instance).
lock:  ## Regenerate requirements.lock from pyproject.toml (then commit it; `make install` applies it)
	test -x $(UV) || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q uv==$(UV_VERSION); }
	$(UV) pip compile pyproject.toml --extra dev --extra ray --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(TORCH_SOURCE) --generate-hashes --no-emit-find-links --no-emit-index-url -o $(LOCK)

run: install  ## Run the default experiment (ARGS="key=value ..." for Hydra overrides)
	$(PY) -m testbed.cli $(ARGS)

test: install  ## Run the test suite (fast and slow tiers)
	$(PY) -m pytest -q $(ARGS)

check: lint type test  ## What CI runs: lint, format check, type check, then the tests

test-fast: install  ## Run only the fast tier
	$(PY) -m pytest -q -m "not slow" $(ARGS)

PY_SOURCES := testbed tests benchmarks experiments hydra_plugins

lint: install  ## ruff: lint and format check over every Python file
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)

format: install  ## ruff format every Python file
	$(VENV)/bin/ruff format $(PY_SOURCES)

type: install  ## mypy over every Python file
	$(VENV)/bin/mypy $(PY_SOURCES)

bench: install  ## Benchmarks: ratios against a baseline measured in the same run
	$(PY) -m benchmarks.run $(ARGS)

# A preset of conf/experiment/ as one sweep into multirun/<env>/<time>_<EXP>; rerunning it runs only the jobs
# without a complete result (docs/sweeps.md). ENV= picks the env (default: conf/config.yaml's).
sweep: install  ## Sweep a preset: make sweep EXP=rl_budget|bc_frontier|from_scratch|study [ENV=acrobot] [ARGS=...]
	$(PY) -m testbed.cli -m experiment=$(EXP) $(if $(ENV),env=$(ENV)) $(ARGS)

report: install  ## Report of sweep folder(s): make report SWEEP="multirun/<env>/<sweep> ..." [ARGS=--no-wandb]
	@test -n "$(SWEEP)" || { echo 'usage: make report SWEEP="<sweep folder(s)>" [ARGS="--no-wandb --out DIR"]'; exit 2; }
	$(PY) -m testbed.report $(SWEEP) $(ARGS)

# The study preset as one sweep into multirun/<env>/<time>_study, then its report (built even when jobs
# failed: it lists them); prints the wall time of both. ENV= picks the env (default: conf/config.yaml's).
study: install  ## The study preset (frontier, BC+RL, RL from scratch; 5 seeds) and its report, timed
	@stamp=$$(date +%Y-%m-%d_%H-%M-%S); start=$$(date +%s); t0=$$(date +%s.%N); \
	$(PY) -m testbed.cli -m experiment=study $(if $(ENV),env=$(ENV)) \
		"hydra.sweep.dir=multirun/\$${env.name}/$${stamp}_study" $(ARGS); status=$$?; \
	wall=$$(awk -v t0=$$t0 -v t1=$$(date +%s.%N) 'BEGIN { printf "%.3f", t1 - t0 }'); \
	dir=$$(ls -d multirun/*/$${stamp}_study* | head -n 1); \
	$(PY) -m testbed.analysis.timing $$dir --wall $$wall || status=1; \
	$(PY) -m testbed.report $$dir || status=1; \
	echo "study: $$(( $$(date +%s) - start )) s wall (sweep + report); report: $$dir/report/index.html"; \
	exit $$status

# The cross-env gap study (conf/experiment/gap.yaml: four envs, graded imitation starts, RL from scratch) as one
# sweep into multirun/gap/<time>_gap, then its report with the cross-env section; prints the wall time of both.
study-all: install  ## The cross-env gap-to-cover study (experiments/gap_to_cover.md) and its report, timed
	@stamp=$$(date +%Y-%m-%d_%H-%M-%S); start=$$(date +%s); t0=$$(date +%s.%N); \
	$(PY) -m testbed.cli -m experiment=gap "hydra.sweep.dir=multirun/gap/$${stamp}_gap" $(ARGS); status=$$?; \
	wall=$$(awk -v t0=$$t0 -v t1=$$(date +%s.%N) 'BEGIN { printf "%.3f", t1 - t0 }'); \
	dir=$$(ls -d multirun/gap/$${stamp}_gap* | head -n 1); \
	$(PY) -m testbed.analysis.timing $$dir --wall $$wall || status=1; \
	$(PY) -m testbed.report $$dir || status=1; \
	echo "study-all: $$(( $$(date +%s) - start )) s wall (sweep + report); report: $$dir/report/index.html"; \
	exit $$status

clean:  ## Remove run outputs and caches (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf outputs multirun wandb .pytest_cache .mypy_cache .ruff_cache .cache
