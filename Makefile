# Plateforme data QFDMO — entry points. See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run up down status test test-fast lint bench lock clean-local

$(STAMP): airflow-requirements.txt dev-requirements.txt installer-requirements.txt
	@scripts/venv.sh

venv: $(STAMP)

## Starts the whole platform in the foreground; Ctrl-C stops everything.
run: venv
	@$(PY) -m devstack run

## Same, in the background; returns once every Airflow component is healthy.
up: venv
	@$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: venv
	@$(PY) -m devstack status

## Linters + the whole test suite, on throwaway services started by the tests. Two pytest-xdist
## workers: the Airflow stack's tests on one, everything else on the other (see conftest.py); the
## linters run beside them (scripts/test.sh). TEST_WORKERS=1 for a single pytest process.
test: venv
	@scripts/test.sh

## Unit tests only (no PostgreSQL, S3 or Airflow started): the quick loop while changing code.
test-fast: venv
	@$(VENV)/bin/pytest -q -m unit dags_unit_tests

lint: venv
	@scripts/lint.sh

bench: venv
	@scripts/bench.sh

## Recompiles the lock files (runtime, then dev constrained by runtime, then the installer).
lock: venv
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o airflow-requirements.txt airflow-requirements.in
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o dev-requirements.txt dev-requirements.in
	$(VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links -o installer-requirements.txt installer-requirements.in

## Deletes the local stack's state (databases, S3 objects, Airflow home). The stack must be stopped.
clean-local: down
	rm -rf .local
