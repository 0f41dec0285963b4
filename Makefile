# Voice agent: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv run test test-deps test-stack lint format lock bench clean docs

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

venv: $(VENV)/.runtime ## Create .venv with the locked dependencies (make run does it too)
	@echo "Ready. Next: cp .env.example .env, edit it, then make run"

run: $(VENV)/.runtime ## Run the agent here, against the backends named in .env
	@[ -f .env ] || { echo "No .env: cp .env.example .env and edit it first."; exit 1; }
	$(BIN)/voice-agent serve --env-file .env

test-deps: ## Install what the tests need (Debian packages when root, locked Python and npm packages)
	scripts/system-packages.sh
	@$(MAKE) --no-print-directory $(VENV)/.test
	@if command -v npm >/dev/null; then cd tests/pipecat_client && \
	  { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --loglevel=error >/dev/null; }; fi

# The stack test's images are built first: building needs the package registries, the
# tests run network-isolated (to 127.0.0.1 and their own namespaces, when root).
test: test-deps ## Run the whole test suite, the appliance under a Docker engine of its own included
	$(BIN)/python -m tests.stack.images
	scripts/isolated.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

test-stack: test-deps ## Run only the stack test: the appliance for real (root; ~4 min)
	$(BIN)/python -m tests.stack.images
	scripts/isolated.sh $(BIN)/python -m pytest -m stack tests/test_stack.py $(PYTEST_ARGS)

bench: test-deps ## Print latency, capacity, split-sentence and pause-set figures (~19 min; BENCH_ARGS=--quick ~5)
	scripts/isolated.sh $(BIN)/python -m tests.bench.latency $(BENCH_ARGS)
	scripts/isolated.sh $(BIN)/python -m tests.bench.capacity $(BENCH_ARGS)
	scripts/isolated.sh $(BIN)/python -m tests.bench.splits $(BENCH_ARGS)
	scripts/isolated.sh $(BIN)/python -m tests.bench.pauses $(BENCH_ARGS)

lint: $(VENV)/.test ## Check the code with ruff
	$(BIN)/ruff check agent tests
	$(BIN)/ruff format --check agent tests

format: $(VENV)/.test ## Format the code with ruff
	$(BIN)/ruff format agent tests
	$(BIN)/ruff check --fix agent tests

docs: $(VENV)/.runtime ## Regenerate .env.example and the README's settings tables from agent/config.py
	$(BIN)/voice-agent config --write-docs

# Pipecat requires these, but only for video and a resampler the agent never uses; the
# locks leave them out (every install is --no-deps) and tests/test_dependencies.py proves
# the agent runs without them. They are most of the image's size.
UNUSED_PACKAGES := opencv-python-headless numba llvmlite resampy
UV_COMPILE = $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --no-header \
	$(addprefix --no-emit-package ,$(UNUSED_PACKAGES))

lock: ## Re-pin the dependencies (hashed locks, no download URLs) and flake.nix's wheelsHash
	$(BIN)/pip install --quiet uv
	$(UV_COMPILE) pyproject.toml -o requirements.lock
	$(UV_COMPILE) --extra test pyproject.toml -o requirements-test.lock
	PYTHON=$(BIN)/python scripts/wheels-hash.sh

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# --- The appliance: Docker Compose, systemd, the Nix-built image ---------------
# GPU=1 adds compose.gpu.yaml to every Compose command (up-gpu sets it).
GPU ?=
DOCKER ?= docker
NIX ?= nix --extra-experimental-features "nix-command flakes"
SERVICE ?=
WAIT_TIMEOUT ?= 600
# Recursive (=) so that `up-gpu: GPU = 1` reaches the recipes of `up`.
gpu_on = $(filter 1 yes true,$(GPU))
COMPOSE = $(DOCKER) compose$(if $(gpu_on), -f compose.yaml -f compose.gpu.yaml)
GPU_FLAG = $(if $(gpu_on),--gpu)

.PHONY: up up-gpu down logs status models image install uninstall doctor

up: ## Start the stack, wait until healthy, print the URL (GPU=1 for NVIDIA)
	$(COMPOSE) up --detach --remove-orphans
	COMPOSE="$(COMPOSE)" scripts/wait-healthy.sh --timeout $(WAIT_TIMEOUT)

up-gpu: GPU = 1
up-gpu: up ## Start with NVIDIA GPUs (same as make up GPU=1)

down: ## Stop the stack (models and certificate stay in volumes)
	$(COMPOSE) down

logs: ## Follow the logs (SERVICE=agent|ollama|speaches for one)
	$(COMPOSE) logs --follow --tail=200 $(SERVICE)

status: ## Show each service's state and health
	$(COMPOSE) ps --all

models: ## Download the configured models (idempotent, resumable)
	$(COMPOSE) up --detach --wait ollama speaches
	$(COMPOSE) run --rm --no-deps agent pull-models

image: ## Build the agent image with Nix and load it into Docker
	$(NIX) build .#image --out-link result-image
	$(DOCKER) load --input result-image

install: ## Start the stack on boot with systemd (sudo; GPU=1 for NVIDIA)
	scripts/install-systemd.sh $(GPU_FLAG)

uninstall: ## Remove the systemd unit (volumes are kept)
	scripts/uninstall-systemd.sh

doctor: ## Check Docker, Compose, GPU runtime, ports, disk, memory
	COMPOSE="$(COMPOSE)" scripts/doctor.sh $(GPU_FLAG)
