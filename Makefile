# lockkit: the front door. Every target works from a bare clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help install deps servers fmt lint typecheck test test-unit docs demo bench bench-deps bench-smoke bench-compare clean chaos

help:
	@echo "make install    create .venv and install lockkit with its dev extras"
	@echo "make deps       install + the servers the tests run (Redis, ZooKeeper, etcd, PostgreSQL, Kafka)"
	@echo "make test       the whole test suite, installing whatever it needs first"
	@echo "make lint       ruff check, ruff format --check, mypy --strict"
	@echo "make docs       the documentation site into site/ (a warning fails the build)"
	@echo "make mutants    deliberate bugs the tests must catch; fails if one survives"
	@echo "make demo       inventory demo on the embedded memory:// backend (URL=... for another)"
	@echo "make bench      every suite and contender, interleaved (~12 min on 2 cores); JSON,"
	@echo "                 Markdown and PNG charts into benchmarks/results/latest/"
	@echo "                 (BENCH_ARGS='--quick' for ~2 min; --help for slices)"
	@echo "make bench-smoke  tiny durations: fails unless every contender ran (CI)"
	@echo "make chaos      workers, one lock and a seeded nemesis on every server backend;"
	@echo "                 [BACKEND=redis,etcd SECONDS=60 SEED=1]; tables into chaos/results/"
	@echo "make bench-compare BASELINE=<git ref> [COMPARE_ARGS=--quick]"
	@echo "                 Redis figures of <ref> and this tree, interleaved in one run"

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

servers:
	bash scripts/servers.sh install

deps: install servers

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict lockkit tests

typecheck: install
	$(PY) -m mypy --strict lockkit tests

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit tests/contract -m "not redis and not redlock and not zookeeper and not etcd and not kafka and not sql and not postgres" $(PYTEST_ARGS)

# The docs extra on top of the dev install; mkdocs build --strict turns every warning
# (a broken link, a page left out of the nav, a docstring griffe cannot read) into an error.
DOCS_STAMP := $(VENV)/.docs-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[docs]'
	@rm -f $(VENV)/.docs-*
	@touch $@

BACKEND ?= all
SECONDS ?= 60

chaos: deps
	$(PY) -m tests.fault.chaos --backend $(BACKEND) --seconds $(SECONDS) $(if $(SEED),--seed $(SEED),)

mutants: deps
	$(PY) scripts/mutants.py $(MUTANTS)

demo: install
	$(PY) -m lockkit demo $(if $(URL),--url '$(URL)',)

BENCH_STAMP := $(VENV)/.bench-$(shell cat benchmarks/requirements*.txt | sha1sum | cut -c1-12)

bench-deps: deps $(BENCH_STAMP)

$(BENCH_STAMP): benchmarks/requirements.txt benchmarks/requirements-nodeps.txt
	$(PY) -m pip install -q --disable-pip-version-check -r benchmarks/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r benchmarks/requirements-nodeps.txt
	@rm -f $(VENV)/.bench-*
	@touch $@

bench: bench-deps
	$(PY) -m benchmarks $(BENCH_ARGS)

bench-smoke: bench-deps
	$(PY) -m benchmarks --smoke --out $${TMPDIR:-/tmp}/lockkit-bench-smoke $(BENCH_ARGS)

# A temporary worktree of $(BASELINE) is version A, this tree version B.
bench-compare: deps
	@test -n "$(BASELINE)" || { echo "usage: make bench-compare BASELINE=<git ref>"; exit 2; }
	@dir=$$(mktemp -d)/baseline && \
	git worktree add --detach -q "$$dir" "$(BASELINE)" && \
	trap 'git worktree remove --force "$$dir"; rmdir "$$(dirname "$$dir")"' EXIT && \
	$(PY) -m benchmarks.compare --baseline "$$dir" $(COMPARE_ARGS)

clean:
	rm -rf $(VENV) .services .mypy_cache .ruff_cache .pytest_cache build dist site benchmarks/results/bench-*.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
