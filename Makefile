# Two commands do all the set-up on a fresh machine:  `make repro`  (the main job)  and  `make test`.
# Both create .venv and install the pinned stack first (pip: torch==2.13.0 is the CPU build).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline and quiet: no telemetry from Prefect, DVC or Great Expectations.
export PATH := $(BIN):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: install repro test bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/dvc repro
	@echo
	@echo "Outputs:"
	@echo "  data/ingested.parquet  data/clean.parquet  data/tokens.parquet  artifacts/tokenizer.json"
	@echo "  reports/validation.json  reports/tokenize.json"
	@$(BIN)/dvc metrics show 2>/dev/null || true

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean-venv:
	rm -rf $(VENV)
