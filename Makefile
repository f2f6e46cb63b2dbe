# crm_sync: `make demo` runs the demo sync against the local CRM sandbox, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow ui sandbox bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed  # its runs in .crm_sync/dagster_home ($$DAGSTER_HOME): `make ui` shows them
	$(BIN)/crm-sync demo

test: $(VENV)/.installed
	$(BIN)/pytest -q

test-slow: $(VENV)/.installed  # the `slow` tests `make test` leaves out (CI runs both)
	$(BIN)/pytest -q -m slow

ui: $(VENV)/.installed  # the sandbox + `dg dev` on :3000, on the demo's instance and store
	$(BIN)/crm-sync ui

sandbox: $(VENV)/.installed
	$(BIN)/crm-sync sandbox

bench: $(VENV)/.installed  # ~15 min: figures as in BENCHMARKS.md (not part of `make test`)
	$(BIN)/crm-sync bench

clean:
	rm -rf .crm_sync
