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

.PHONY: install repro test chromium bench scaling clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'  # not --no-compile: with PYTHONDONTWRITEBYTECODE set, every process would recompile its imports
	touch $(STAMP)

repro: $(STAMP)
	$(BIN)/reweigh repro  # dvc repro, its stages sharing one Prefect server
	@echo
	@$(BIN)/reweigh summary

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The browser test drives Debian's Chromium through Playwright (never a downloaded browser): install it
# when missing. If apt cannot, say so; the browser test then fails in CI (CI set) and skips elsewhere.
chromium:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  echo "installing Debian's chromium for the browser test"; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "WARNING: could not install chromium with apt-get: the browser test fails in CI and is skipped elsewhere"; }

bench: $(STAMP)
	$(BIN)/python -m bench

# Learning curves after `make repro`: DVC experiments over train.label_limit, reports/scaling.md (docs/scaling.md)
scaling: $(STAMP)
	$(BIN)/reweigh scaling

clean-venv:
	rm -rf $(VENV)
