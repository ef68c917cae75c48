# Two commands do everything on a fresh machine:
#   make demo   the main job (a local wallet + relay with a bundled fake provider)
#   make test   the whole test suite (creates .venv, installs what it needs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo protocol-demo test lint bench vectors system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/capwallet demo

protocol-demo: $(STAMP)
	$(PY) examples/protocol_demo.py

# Redis and Chromium come from Debian's packages (installed when run as root).
system-deps:
	bash scripts/system-deps.sh

test: $(STAMP) system-deps
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict src/capwallet
	MYPYPATH=src $(VENV)/bin/mypy --strict reference_relay fake_provider

bench: $(STAMP)
	$(PY) bench/verify.py
	$(PY) bench/relay.py
	$(PY) bench/store.py --quick

vectors: $(STAMP)
	$(PY) test_vectors/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis artifacts
