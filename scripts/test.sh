#!/usr/bin/env bash
# `make test`: the linters and the whole test suite. The linters run beside pytest (they need one
# core for ~40 s while the Airflow tests mostly wait on their stack), and their output is printed
# once the tests are done. Exits non-zero if either fails.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
workers=${TEST_WORKERS:-2}

lint_output=$(mktemp)
trap 'rm -f "$lint_output"' EXIT
scripts/lint.sh >"$lint_output" 2>&1 &
lint_pid=$!
echo "test: linters running beside the tests (their result follows the tests')"

if [ "$workers" -gt 1 ]; then
  .venv/bin/pytest -n "$workers" --dist loadgroup dags_unit_tests "$@"
else
  .venv/bin/pytest dags_unit_tests "$@"
fi
tests=$?

wait "$lint_pid"
lint=$?
cat "$lint_output"
if [ $tests -ne 0 ] || [ $lint -ne 0 ]; then
  echo "test: FAILED (tests exit $tests, linters exit $lint)" >&2
  exit 1
fi
