# Herald — one Makefile for the whole suite. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
STAMP := $(VENV)/.installed

.PHONY: help install gen gen-check run demo test test-cluster test-unit test-integration lint format typecheck check bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml uv.lock
	@scripts/install.sh
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies (uv.lock)

gen: $(STAMP) ## Regenerate gen/ from protos/ (messages, gRPC stubs, .pyi)
	@scripts/gen.sh

gen-check: gen ## Fail when gen/ differs from what protos/ generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
	  echo "gen/ is stale: run 'make gen' and commit the result"; git status --porcelain -- gen; exit 1; fi

run: $(STAMP) ## Run the whole stack: embedded Redis, the sandboxes and the four services
	@$(PY) -m services.stack

demo: $(STAMP) ## With `make run` going: simulated devices, a personalised campaign, its progress and report
	@$(VENV)/bin/herald demo $(ARGS)

test: $(STAMP) ## Run every test tier (unit, integration, e2e)
	@$(PY) -m pytest -q

test-cluster: $(STAMP) ## Run the integration tests against a 3-master Redis Cluster
	@$(PY) -m pytest -q --redis-cluster --every-script tests/integration

test-unit: $(STAMP) ## Run the unit tests only
	@$(PY) -m pytest -q tests/unit

lint: $(STAMP) ## ruff check, ruff format --check, buf lint
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/buf lint

format: $(STAMP) ## Apply ruff's fixes and formatting
	@$(VENV)/bin/ruff check --fix .
	@$(VENV)/bin/ruff format .

typecheck: $(STAMP) ## mypy on services/, tests/ and bench/ (generated code read through its .pyi)
	@$(VENV)/bin/mypy services tests bench

check: lint typecheck gen-check test test-cluster ## Everything CI checks (what .ci/run runs after install)

bench: $(STAMP) ## Run the benchmarks (never part of make test); figures go to docs/benchmarks.md
	@$(PY) -m bench $(ARGS)

clean: ## Remove the virtualenv and caches (keeps generated code, which is committed)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
