#!/usr/bin/env bash
# DAG parse gate of the deploy workflows: imports every DAG file of a folder with Airflow itself and
# fails when any has an import error (`airflow dags list-import-errors --local` must be empty).
# Runs on a throwaway SQLite metadata database, so it needs no running stack:
#   scripts/dag_parse_gate.sh [DAGS_FOLDER]   (default: dags/)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dags_folder="$(cd "${1:-${repo}/dags}" && pwd)"
home="$(mktemp -d "${TMPDIR:-/tmp}/dag-parse-gate.XXXXXX")"
trap 'rm -rf "${home}"' EXIT

# bin/airflow applies the local stack's environment; these variables override it.
export AIRFLOW_HOME="${home}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///${home}/airflow.db"
export AIRFLOW__CORE__DAGS_FOLDER="${dags_folder}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# The dag-processor puts the bundle folder on sys.path (dags/qfdmo is imported as `qfdmo`); so does the gate.
export PYTHONPATH="${dags_folder}${PYTHONPATH:+:${PYTHONPATH}}"
export QFDMO_OVERRIDE_ENV="AIRFLOW_HOME,AIRFLOW__DATABASE__SQL_ALCHEMY_CONN,AIRFLOW__CORE__DAGS_FOLDER,AIRFLOW__CORE__LOAD_EXAMPLES"

"${repo}/bin/airflow" db migrate >"${home}/migrate.log" 2>&1 || {
  cat "${home}/migrate.log" >&2
  exit 1
}
if ! "${repo}/bin/airflow" dags list-import-errors --local -o json >"${home}/errors.json" 2>"${home}/stderr.log"; then
  echo "DAG parse gate: import errors in ${dags_folder}:" >&2
  cat "${home}/errors.json" >&2
  grep -v "warning" "${home}/stderr.log" | tail -20 >&2 || true
  exit 1
fi
echo "DAG parse gate: no import error in ${dags_folder}"

