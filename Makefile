# Concord — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export UV_PYTHON ?= 3.11
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help install up down test check lint format types protos protos-check breaking types-tests render bench chaos clean ews-conformance

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## install the toolchain and the workspace (uv, .venv, system packages tests need)
	@scripts/install.sh

up: install ## run the whole system on embedded defaults (Ctrl-C stops it); PROFILE=production: PostgreSQL, 3 NATS nodes, 2 reconcilers
	@$(UV) run --frozen concord-devstack up --profile $(or $(PROFILE),embedded)

down: ## stop what `make up` started
	@$(UV) run --frozen concord-devstack down

test: install ## unit, integration, e2e and repository tests (what CI runs)
	@$(UV) run --frozen pytest -n auto --dist loadfile -q

check: lint types types-tests protos-check breaking test ## lint, types (src and tests), protos drift and breaking changes, tests

lint: install ## ruff, ruff format --check, buf lint, buf format -d
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen buf lint
	@$(UV) run --frozen buf format -d --exit-code

format: install ## apply ruff format and buf format
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .
	@$(UV) run --frozen buf format -w

types: install ## mypy --strict on every src/ (the product code)
	@$(UV) run --frozen mypy

types-tests: install ## mypy --strict on each tests/ folder on its own
	@for d in libs/*/tests services/*/tests tools/*/tests emulators/*/tests tests/* benchmarks; do \
	  [ -d "$$d" ] || continue; \
	  $(UV) run --frozen mypy --no-incremental "$$d" >/tmp/concord-mypy.$$$$ 2>&1 \
	    || { echo "mypy $$d:"; cat /tmp/concord-mypy.$$$$; rm -f /tmp/concord-mypy.$$$$; exit 1; }; \
	done; rm -f /tmp/concord-mypy.$$$$; echo "mypy: tests clean"

protos: install ## regenerate libs/protos from protos/
	@$(UV) run --frozen scripts/protos.sh generate

protos-check: install ## fail if the committed generated code differs from protos/
	@$(UV) run --frozen scripts/protos.sh check

breaking: install ## buf breaking (FILE) against main, or AGAINST=<git ref>
	@$(UV) run --frozen buf breaking --against '.git#ref=$(or $(AGAINST),main)'

render: install ## render every kustomize overlay and validate it, validate skaffold.yaml
	@$(UV) run --frozen scripts/render.sh

bench: install ## benchmarks: ratios measured in one run
	@$(UV) run --frozen pytest -q -s -p no:cacheprovider benchmarks \
	  services/linker/tests/unit/test_labelled_set.py

chaos: install ## the chaos harness: 10 minutes of faults while both sides are edited (SECONDS=600)
	@$(UV) run --frozen python -m tests.chaos --seconds $(or $(SECONDS),600)

clean: ## remove var/ and caches
	rm -rf var .pytest_cache .mypy_cache .ruff_cache

ews-conformance: install ## exchangelib's live tests against a fresh Exchange emulator: SUITE=<exchangelib checkout>
	@test -n "$(SUITE)" || { echo "usage: make ews-conformance SUITE=/path/to/exchangelib"; exit 2; }
	@$(UV) run --frozen python tools/ews_conformance.py "$(SUITE)" --list-failures
