# Modelyard: `make run` starts the gateway on the default config; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/gateway.yaml
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install install-test run test test-fast bench bench-smoke lint check-config system-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/modelyard serve --config $(CONFIG)

check-config: install
	$(BIN)/modelyard check-config $(CONFIG)

# What the tests need from Debian: a real redis-server (never a mock), Chromium for the status
# page test, openssl for the TLS Redis tests' throwaway CA, and the validators of the deployment
# files (promtool, kubectl, kubernetes-validate) installed by deploy/tools.sh.
APT_NEEDS := $(if $(shell command -v redis-server),,redis-server) $(if $(shell command -v chromium),,chromium) \
  $(if $(shell command -v openssl),,openssl)
system-deps:
	@if [ -n "$(strip $(APT_NEEDS))" ]; then \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_NEEDS) >/dev/null; fi
	@if [ -f deploy/tools.sh ]; then bash deploy/tools.sh; fi

# The benchmark harness's smoke run first, so that pytest's summary is the last line printed.
test: install-test system-deps
	$(MAKE) --no-print-directory bench-smoke
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: install-test
	$(BIN)/python -m pytest -q -x -p no:cacheprovider

bench: install-test system-deps
	$(BIN)/python -m tests.bench

bench-smoke: install-test
	$(BIN)/python -m tests.bench --smoke

lint: install-test
	$(PIP) install ruff mypy
	$(BIN)/ruff check gateway adapters tests
	$(BIN)/mypy gateway adapters --ignore-missing-imports

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
