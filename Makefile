# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHECKSUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(CHECKSUM)
# The demo needs the CLI extra only (about 54 MB), not the test toolchain.
DEMO_STAMP := $(VENV)/.demo-$(CHECKSUM)

.PHONY: demo test system-deps lint typecheck pytest fuzz bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[cli]'
	rm -f $(VENV)/.demo-*
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/taskbus demo

test: $(STAMP) system-deps lint typecheck pytest

# Chromium, Qt's system libraries and a Redis server: installed or started when missing.
system-deps:
	./scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check taskbus tests examples benchmarks
	$(BIN)/ruff format --check taskbus tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q

# The large property-based runs (hypothesis), kept out of `make test`.
fuzz: $(STAMP)
	$(BIN)/pytest -q -m fuzz --run-fuzz

bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/durable.py
	$(BIN)/python benchmarks/multiprocess.py
	$(BIN)/python benchmarks/input_required.py
	$(BIN)/python benchmarks/http_api.py
	$(BIN)/python benchmarks/redis.py
	$(BIN)/python benchmarks/keyed_concurrency.py
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/dependencies.py
	$(BIN)/python benchmarks/schedule_drift.py
	$(BIN)/python benchmarks/tracing.py
	$(BIN)/python benchmarks/observability.py

# The documentation site, into site/ (strict: a broken link or a stale API name fails).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site *.egg-info
