# Two set-up commands: `make demo` and `make test`. `make setup` does the install alone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 first: it is the CPU build on this machine's disk; a bare `torch` pulls CUDA.
# tests/plugins/audit-toy: a test-only plugin (the toy target) for tests that run `audit` as a subprocess
$(STAMP): $(BIN)/python pyproject.toml $(PLUGINS) tests/plugins/audit-toy/pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	$(BIN)/pip install -q -e examples/audit-example-attack -e tests/plugins/audit-toy
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/audit run audit.yaml

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_attacks.py --quick

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache
