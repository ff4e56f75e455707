# The two commands: `make run` and `make test`. Everything installs into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
AGENT_LATENCY_SCALE ?= 1
export PORT AGENT_LATENCY_SCALE

.PHONY: run test lint format typecheck unit functional e2e bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp files re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## run: start the local server on http://127.0.0.1:$(PORT) with the embedded SQLite store
run: $(VENV)/.installed
	$(BIN)/python -m agentic.local --port $(PORT)

## test: lint, type-check and run every test tier that needs no AWS account
test: $(VENV)/.installed-dev lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/unit

functional: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/functional

e2e: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/e2e

## bench: throughput and latency of the in-process runner and of the HTTP API (prints, never asserts)
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .data .aws-sam .pytest_cache .mypy_cache .ruff_cache
