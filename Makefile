# The two commands: `make run` and `make test`. Everything installs into .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
AGENT_LATENCY_SCALE ?= 1
export PORT AGENT_LATENCY_SCALE

SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam

.PHONY: run test lint lint-template format typecheck unit functional e2e bench bench-storage coldstart cost build clean browser test-figures

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The stamp files re-install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local,cli]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## run: start the local server on http://127.0.0.1:$(PORT) with the embedded SQLite store
run: $(VENV)/.installed
	$(BIN)/python -m agentic.local --port $(PORT)

## test: lint, type-check, lint the SAM template and run every test tier that needs no AWS account
test: $(VENV)/.installed-dev lint typecheck lint-template browser
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# The web view's browser test drives Debian's chromium (Playwright downloads no browser). Installed
# once, quietly, where apt-get can run (root); elsewhere the test skips and says why (CI fails instead).
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium for the browser test (apt-get, once)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium chromium-driver) >/dev/null 2>&1 || echo "could not install chromium: the browser test cannot run"; \
	  else echo "no $(CHROMIUM) and no apt-get as root: the browser test will skip"; fi; \
	fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The SAM CLI pins many packages of its own, so it lives in its own virtualenv.
$(SAM): pyproject.toml
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet "$$(sed -n 's/^ *"\(aws-sam-cli==[^"]*\)".*/\1/p' pyproject.toml)"
	touch $@

## lint-template: cfn-lint and sam validate --lint on template.yaml (offline)
lint-template: $(VENV)/.installed-dev $(SAM)
	$(BIN)/cfn-lint template.yaml
	$(SAM) validate --lint

## build: sam build (no Docker, no local python3.13: the layer is built from arm64 wheels)
# The functions have no requirements.txt: their dependencies are the CoreLayer's. sam says so once per
# function ("requirements.txt file not found"); that line is dropped, and said once here instead.
build: $(VENV)/.installed-dev $(SAM)
	@echo "sam build (the functions take their dependencies from the CoreLayer: they have no requirements.txt)"
	@set -o pipefail; LAYER_PYTHON=$(CURDIR)/$(BIN)/python $(SAM) build 2>&1 | { grep -v 'requirements.txt file not found' || true; }

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/unit

functional: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q tests/functional

e2e: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest -q tests/e2e

## bench: throughput and latency of the in-process runner and of the HTTP API, the issue-17 table beside
## LangGraph (installed into .venv-peer, never .venv), then storage (prints, never asserts)
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.model
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench.knowledge

## bench-storage: bytes on disk per task, list pages at depth, resume after SIGKILL
bench-storage: $(VENV)/.installed-dev
	$(BIN)/python -m bench.storage
	$(BIN)/python -m bench.knowledge

## cost: AWS requests, units and dollars per task (Standard and Express), measured under moto (prints, never asserts)
cost: $(VENV)/.installed-dev
	$(BIN)/python -m bench.cost

## test-figures: run lint, type checks and the tests, and write their counts and times into README.md
test-figures: $(VENV)/.installed-dev
	$(BIN)/python -m bench.readme_figures

## coldstart: CPU time of importing each Lambda handler, and of that plus its first call (events/, moto on loopback), as ratios to `import boto3` (prints, never asserts)
coldstart: $(VENV)/.installed-dev
	$(BIN)/python -m bench.coldstart

clean:
	rm -rf $(VENV) $(SAM_VENV) .venv-peer .data .aws-sam .pytest_cache .mypy_cache .ruff_cache
