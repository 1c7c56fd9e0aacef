# chinwag: `make run` to chat, `make test` to test. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per set of extras, keyed on what decides the install: a second call is instant.
KEY := $(shell cat pyproject.toml Makefile scripts/install-llama.sh 2>/dev/null | cksum | cut -d' ' -f1)
BASE_STAMP := $(VENV)/.installed-base-$(KEY)
DEV_STAMP := $(VENV)/.installed-dev-$(KEY)
PYTEST_ARGS ?=

.PHONY: install install-dev run test lint bench clean help

help:
	@echo "make run      install (first time) and start the bot (chinwag run)"
	@echo "make test     install with the dev extra and run the test suite"
	@echo "make install  create .venv and install chinwag with the local model backend"
	@echo "make lint     ruff, mypy and import-linter"
	@echo "make bench    run the benchmarks in bench/"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "chinwag needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): install Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	@$(PY) -m pip install --quiet --upgrade pip

$(BASE_STAMP): | $(PY)
	@rm -f $(VENV)/.installed-base-*
	@bash scripts/install-llama.sh $(VENV)
	@echo "installing chinwag into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(DEV_STAMP): $(BASE_STAMP)
	@rm -f $(VENV)/.installed-dev-*
	@echo "installing the dev extra ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(BASE_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(VENV)/bin/chinwag run

test: install-dev
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install-dev
	$(PY) -m bench.core
	$(PY) -m bench.store
	$(PY) -m bench.telegram
	$(PY) -m bench.discord
	$(PY) -m bench.local

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
