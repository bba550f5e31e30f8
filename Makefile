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
.PHONY: help install run test test-fast lint type bench clean report study sweep

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
	@stamp=$$(date +%Y-%m-%d_%H-%M-%S); start=$$(date +%s); \
	$(PY) -m testbed.cli -m experiment=study $(if $(ENV),env=$(ENV)) \
		"hydra.sweep.dir=multirun/\$${env.name}/$${stamp}_study" $(ARGS); status=$$?; \
	dir=$$(ls -d multirun/*/$${stamp}_study* | head -n 1); \
	$(PY) -m testbed.report $$dir || status=1; \
	echo "study: $$(( $$(date +%s) - start )) s wall (sweep + report); report: $$dir/report/index.html"; \
	exit $$status

clean:  ## Remove run outputs and caches (keeps .venv; `rm -rf .venv` for a full reset)
	rm -rf outputs multirun wandb .pytest_cache .mypy_cache .ruff_cache .cache
