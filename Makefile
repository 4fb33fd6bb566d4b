# breastpath: `make run` serves the bundled model, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# One install stamp per checkout, so a venv shared between clones (CI's cache) is re-pointed here.
CHECKOUT := $(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(CHECKOUT)

.PHONY: run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	touch $@

$(STAMP)-dev: $(STAMP)
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/breastpath serve --checkpoint default --host $(HOST) --port $(PORT)

test: $(STAMP)-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)-dev
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src/breastpath
	$(BIN)/lint-imports

format: $(STAMP)-dev
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cancernet.py --compile --json benchmarks/results.json

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache
