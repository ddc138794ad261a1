# Sluice: two set-up commands, `make demo` and `make test`. Each installs what it needs into a
# virtual environment in the checkout (.venv) using only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
LOADTEST_STAMP := $(VENV)/.installed-loadtest
SHARED ?= ../shared
CONFORMANCE := $(SHARED)/conformance/gateway-api

.PHONY: install demo test check unit conformance scenario-smoke loadtest bench fmt clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

$(LOADTEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,loadtest]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sluice demo

test: check unit conformance

check: $(STAMP)
	scripts/check

unit: $(STAMP)
	scripts/test

conformance: $(STAMP)
	@test -f $(CONFORMANCE)/runner.py || { echo "missing $(CONFORMANCE): clone with ../shared beside the project"; exit 1; }
	cd $(CONFORMANCE) && PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/python runner.py \
		--gateway-cmd "$(abspath $(BIN))/sluice serve --config {config} --admin 127.0.0.1:0 --no-watch"

scenario-smoke: $(STAMP)
	$(BIN)/python -m pytest -m scenario tests/component

loadtest: $(LOADTEST_STAMP)
	$(BIN)/sluice loadtest loadtests/scenarios/default.yaml

bench: $(STAMP)
	$(BIN)/python loadtests/bench_overhead.py
	$(BIN)/python loadtests/reload_under_load.py

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
