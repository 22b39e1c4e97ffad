# Two set-up commands: `make demo` and `make test`. `make setup` does the install alone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.installed
# test-only plugins (the toy target `toy-testing`, the example attack `example-attack` with its
# `variation-similarity`): installed by `make test` only, so they never appear in a user's
# `audit plugins`, attack choices or report
TEST_PLUGINS := tests/plugins/audit-toy examples/audit-example-attack
TEST_STAMP := $(VENV)/.installed-test
# plugins installed with their `test` extra: the real clients and servers their tests talk to
# (webuiapi and huggingface_hub for http; gradio, a real Gradio server, for gradio)
WITH_TEST_EXTRA := plugins/http/ plugins/gradio/

# pipefail: the install is piped through QUIET, and a failed pip must still fail the target
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

# pip -q still prints setuptools' "Editable installation" notice once per package (a reminder
# about editable installs, nothing to act on) and a note per pip.conf index that has no such
# folder; drop those. Everything else, errors above all, passes through.
QUIET := awk '/BuildBackendWarning: Editable installation/ {skip = 1; bangs = 0; next} \
	skip == 1 && /^ *!!$$/ {if (++bangs == 2) skip = 2; next} \
	skip == 2 {skip = 0; next} skip {next} \
	/^WARNING: Location .* is ignored: it is neither a file nor a directory/ {next} {print}'

.PHONY: setup demo test bench mutate clean

$(BIN)/python:
	@echo "Creating $(VENV) with $$($(PY) --version)"
	@$(PY) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip 2>&1 | $(QUIET)

# torch==2.13.0 first: it is the CPU build on this machine's disk; a bare `torch` pulls CUDA.
$(STAMP): $(BIN)/python pyproject.toml $(PLUGINS)
	@echo "Installing torch 2.13.0 (CPU), then audit-core and $(words $(PLUGINS)) plugins (editable) ..."
	@$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET)
	@$(BIN)/pip install -q -e '.[test]' $(foreach p,$(PLUGINS),-e '$(dir $(p))$(if $(filter $(dir $(p)),$(WITH_TEST_EXTRA)),[test])') 2>&1 | $(QUIET)
	@touch $(STAMP)
	@$(BIN)/python -c "import importlib.metadata as m, sys; \
	d = sorted({x.metadata['Name'] for x in m.distributions() if x.metadata['Name'].startswith('audit-')}); \
	print(f'Installed into $(VENV) (Python {sys.version.split()[0]}, torch {m.version(\"torch\")}):'); \
	print('  ' + ', '.join(d)); \
	print('Editable: changes to this checkout take effect without reinstalling.'); \
	print('Next: make demo   (or: $(BIN)/audit run audit.yaml)')"

$(TEST_STAMP): $(STAMP) $(foreach p,$(TEST_PLUGINS),$(p)/pyproject.toml)
	@echo "Installing the test-only plugins: $(TEST_PLUGINS)"
	@$(BIN)/pip install -q $(foreach p,$(TEST_PLUGINS),-e $(p)) 2>&1 | $(QUIET)
	@touch $(TEST_STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/audit run audit.yaml

# lint-imports first: the layers of audit_core ([tool.importlinter] in pyproject.toml)
test: setup $(TEST_STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_attacks.py --quick

# mutation testing (mutmut) of the DDIM maths, seeding, metrics, copyright inference, the
# query-cache keys, secrets and the ownership rules (run directory, cache folder, store) against the fast property tests ([tool.mutmut] in pyproject.toml);
# not part of `make test`. MUTATE: mutmut name globs, MUTATE_BUDGET: wall-clock seconds.
# Score per module and surviving mutants: benchmarks/mutation.txt
MUTATE ?= audit_core.base.ddim.* audit_core.base.seeding.* audit_core.stats.metrics.* audit_core.copyright.inference.* \
	audit_core.plugin.variations.*cache_key* audit_core.copyright.reference.*cache_key* audit_core.base.secrets.* \
	$(MUTATE_OWNERSHIP)
# issue 35: the run directory's containment and links, the query cache's ownership, the store's
# changed-image hashes (`make mutate MUTATE='$$(MUTATE_OWNERSHIP)'` for these alone)
MUTATE_OWNERSHIP := audit_core.run.rundir.* audit_core.data.cache.*foreign_example* audit_core.data.cache.*_claim* \
	audit_core.data.cache.*_require_owned* audit_core.run.store.*rescore_changed* audit_core.run.store.*image_hashes* \
	audit_core.run.store.*forget_images*
MUTATE_BUDGET ?= 1800
mutate: setup
	@$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/pip install -q -e '.[mutate]' 2>&1 | $(QUIET)
	$(BIN)/python benchmarks/mutate.py --budget $(MUTATE_BUDGET) --modules $(foreach m,$(MUTATE),'$(m)')

clean:
	rm -rf $(VENV) reports/*/ .pytest_cache mutants
