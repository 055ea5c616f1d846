# Two commands matter: `make demo` (the end-to-end example pipeline) and `make test`.
# Both create the environment themselves from uv.lock; only python3.11, make and git are needed.
PYTHON ?= python3.11
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: env demo test test-unit test-integration test-matrix chaos lint typecheck benchmarks clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv

# --compile-bytecode: .pyc files at install time, as pip writes them, so Airflow's many short-lived
# processes (task runners, DAG parses, CLI calls) do not compile Airflow from source each time.
$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

env: $(VENV)/.synced

demo: env
	$(VENV)/bin/python scripts/demo.py

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: env
	$(VENV)/bin/mypy

test-unit: env
	$(VENV)/bin/python -m pytest tests/unit -n $(PYTEST_WORKERS)

test-integration: env
	$(VENV)/bin/python -m pytest tests/integration

# Faults, kills and secrets under a real scheduler on PostgreSQL (also part of `make test`).
# CHAOS_REPETITIONS=N repeats every scenario N times (a soak run).
chaos: env
	$(VENV)/bin/python -m pytest tests/chaos -m chaos

# The unit tests run on every core (pytest-xdist; they share nothing); everything that starts
# real services runs in one process, since those tests count containers, leases and runs.
PYTEST_WORKERS ?= 2
test: lint typecheck
	$(VENV)/bin/python -m pytest tests/unit -n $(PYTEST_WORKERS)
	$(VENV)/bin/python -m pytest tests --ignore=tests/unit --durations=40

# The version matrix: tests/unit and tests/smoke in two more envs built with uv under build/matrix:
# "floor" (every declared minimum at once) and "latest" (a fresh resolution, no lock).
# `make test-matrix MATRIX_ENVS=floor` builds one. See scripts/ci/matrix.sh.
MATRIX_ENVS ?= floor latest
test-matrix: | $(UV)
	UV=$(UV) PYTHON=$(PYTHON) bash scripts/ci/matrix.sh $(MATRIX_ENVS)

benchmarks: env
	for b in $$(ls benchmarks/*.py | grep -v "/_"); do echo "== $$b"; $(VENV)/bin/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .demo build/matrix
