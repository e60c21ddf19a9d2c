# mlplatform — `make demo` installs everything from the lock file and runs the demo end to end;
# `make test` runs the test suite. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export MLP_HOME ?= $(CURDIR)/.mlplatform
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=
# pytest-xdist: parallel workers for `make test` / `make test-fast` (each test file runs whole on
# one worker: module fixtures such as the end-to-end demo run are shared by its tests; files are
# handed out in the order tests/conftest.py sorts them, heaviest tier first, not xdist's
# most-tests-first); PYTEST_WORKERS=0 runs in this process
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder,)

.PHONY: help env demo demo-drift test test-fast test-unit lint docs serve ui clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --inexact --python 3.11
	@touch $@

$(VENV)/.horovod: $(VENV)/.synced scripts/install_horovod.sh
	bash scripts/install_horovod.sh $(VENV)
	@touch $@

env: $(VENV)/.horovod .venv-iac/.synced ## create the locked environment (uv), build/install Horovod (cached per TF version), checkov in .venv-iac, install redis-server + PostgreSQL + docker-compose (apt) for the tests
	@bash scripts/install_services.sh

.venv-iac/.synced: tools/iac/pyproject.toml tools/iac/uv.lock scripts/install_iac.sh
	bash scripts/install_iac.sh .venv-iac
	@touch $@

demo: env ## run the demo pipeline through Airflow end to end and query the served model
	$(VENV)/bin/mlplatform demo

demo-drift: env ## the continuous-training loop on Airflow's real scheduler: drift -> monitor -> retrain -> new served version
	$(VENV)/bin/mlplatform demo-drift

test: env lint ## lint, then every tier (unit, integration, e2e) in parallel (PYTEST_WORKERS=2 xdist workers; 0: one process): what CI runs
	$(VENV)/bin/pytest $(XDIST) $(PYTEST_ARGS)

test-fast: env ## the unit and integration tiers (no end-to-end DAG runs), in parallel like `make test`
	$(VENV)/bin/pytest $(XDIST) -m "not e2e" $(PYTEST_ARGS)

test-unit: env ## the unit tier only: pure logic, no server, subprocess or Airflow DB (seconds)
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

lint: env ## ruff check + ruff format --check over the whole tree, import-linter's layer contracts (.importlinter), mypy on the stage contracts, stages, operators, config, Kubernetes builders and infra runners ([tool.mypy]) (part of `make test`, so of CI)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

docs: env ## regenerate docs/reference.md (config fields, operator arguments) from the code
	$(PY) -m mlplatform.docs_reference

serve: env ## run the local TF-Serving-compatible server on the promoted models
	$(VENV)/bin/mlplatform serve

ui: env ## the Airflow UI + platform view (scheduler included) on the embedded home; prints URL and login; Ctrl-C/SIGTERM stops all
	$(VENV)/bin/mlplatform ui

clean: ## remove the embedded state (.mlplatform); keeps the environment
	rm -rf .mlplatform
