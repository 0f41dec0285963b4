# Voice agent: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help install run test test-deps lint format lock bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.test: requirements-test.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements-test.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime ## Create .venv with the locked dependencies
	@echo "Installed. Next: cp .env.example .env, edit it, then make run"

run: $(VENV)/.runtime ## Run the agent here, against the backends named in .env
	@[ -f .env ] || { echo "No .env: cp .env.example .env and edit it first."; exit 1; }
	$(BIN)/voice-agent serve --env-file .env

test-deps: ## Install what the tests need (Debian packages when root, locked Python packages)
	scripts/system-packages.sh
	@$(MAKE) --no-print-directory $(VENV)/.test

test: test-deps ## Run the whole test suite (network-isolated to 127.0.0.1 when root)
	scripts/isolated.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test ## Check the code with ruff
	$(BIN)/ruff check agent tests
	$(BIN)/ruff format --check agent tests

format: $(VENV)/.test ## Format the code with ruff
	$(BIN)/ruff format agent tests
	$(BIN)/ruff check --fix agent tests

lock: ## Re-pin the dependencies (hashed locks, no download URLs)
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --no-header \
	  pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --no-header \
	  --extra test pyproject.toml -o requirements-test.lock

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
