# Two commands do everything on a fresh machine:
#   make demo   the main job (a local wallet + relay with a bundled fake provider)
#   make test   the whole test suite (creates .venv, installs what it needs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo protocol-demo test lint bench vectors mutation system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/capwallet demo
	@echo
	@echo "Next: . $(VENV)/bin/activate && capwallet demo --keep-running   (puts capwallet on PATH, then keeps the demo wallet up for its dashboard)"

protocol-demo: $(STAMP)
	$(PY) examples/protocol_demo.py

# Redis and Chromium come from Debian's packages (installed when run as root).
system-deps:
	bash scripts/system-deps.sh

# The npm package's dev tools and the npm SDKs the tests drive, from package-lock.json.
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package-lock.json
	npm ci --no-audit --no-fund

test: $(STAMP) system-deps $(NODE_STAMP)
	$(PY) -m pytest

# mypy sees tests/ and bench/ as pytest and the benchmarks import them: both are on sys.path
# (no __init__.py), so their helpers (relay_harness, store_suite, conftest, checkout, ...) are
# top-level modules and tests/wallet/ is the package "wallet"; tests import each other by
# those names, never as tests.<name>. examples/ are checked as they are, with src/. scripts/
# and test_vectors/ the same way: a script imports its neighbours by name (mutation_score ->
# mutation_equivalents), and generate.py the package vectorgen beside it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict src/capwallet
	MYPYPATH=src $(VENV)/bin/mypy --strict reference_relay fake_provider
	MYPYPATH=src:tests:bench $(VENV)/bin/mypy --strict --explicit-package-bases tests bench examples
	MYPYPATH=src:scripts:test_vectors $(VENV)/bin/mypy --strict --explicit-package-bases scripts test_vectors

bench: $(STAMP)
	$(PY) bench/verify.py
	$(PY) bench/relay.py
	$(PY) bench/store.py --quick

# Mutation testing of the protocol core with mutmut (not in CI: about an hour on 2 cores).
# [tool.mutmut] in pyproject.toml names the files and the fast tests. Two settings matter:
#  - process_isolation = "forkserver": every mutant runs in a fresh process; with plain fork,
#    workers inherit the lru_caches the stats run filled and many mutants never execute;
#  - the vector no-change check (generate.py --check) runs in a subprocess, which never sees a
#    mutant: check survivors in src/capwallet against it by hand (mutmut apply NAME, then
#    python test_vectors/generate.py --check; git checkout the file after). mutmut 3.8.1's apply
#    writes the mutant over the FIRST def of that bare name in the file (verify.verify lands
#    on Verifier.verify, Verifier.__init__ on VerifiedToken.__init__): read git diff after it.
# Two limits keep one bad mutant from stalling or sinking the run:
#  - time: mutmut gives each mutant's worker a CPU limit (RLIMIT_CPU) of
#    2 x timeout_multiplier x (its tests' time in the clean run + timeout_constant) and a wall
#    limit of half that ([tool.mutmut]: at least 50 s wall, 100 s CPU); a mutant that loops is
#    stopped with SIGXCPU and counted as a timeout, which the score counts as killed;
#  - memory: ulimit -v caps every process of the run at MUTATION_MEMORY_KB of address space
#    (1 GiB; the fast tests need under 1 GiB). A mutant that grows memory without end (e.g.
#    value <<= 7 in macaroon._put_varint) gets MemoryError, its tests fail and it counts as
#    killed, instead of taking the machine's memory from the other processes.
# MUTANTS='capwallet.money*' narrows a run; MUTATION_CHILDREN mutants run at once (default 2);
# scripts/mutation_score.py prints the score per file.
# First, scripts/mutation_equivalents.py reports listed equivalents that went stale (mutmut
# renumbers a function's mutants when the function changes): the run goes on, but a stale
# name may now be another mutant, which the adjusted score would count as equivalent.
MUTANTS ?=
MUTATION_CHILDREN ?= 2
MUTATION_MEMORY_KB ?= 1048576
mutation: $(STAMP)
	$(PY) -m pip install -q 'mutmut==3.8.1'
	$(PY) scripts/mutation_equivalents.py || echo "make mutation: re-judge the stale entries above before trusting the adjusted score"
	rm -rf mutants
	ulimit -v $(MUTATION_MEMORY_KB) && { $(VENV)/bin/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS) || true; }
	$(PY) scripts/mutation_score.py

vectors: $(STAMP)
	$(PY) test_vectors/generate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis artifacts mutants
