#!/usr/bin/env bash
# Entrypoint of airflow-webserver.Dockerfile (Airflow 3 api-server: UI, REST API and the
# execution API that the scheduler app's tasks call).
#   webserver-entrypoint.sh            checks, [db migrate], [admin account], api-server
#   webserver-entrypoint.sh init       checks, db migrate, exits (docker compose init service)
#   webserver-entrypoint.sh check      checks the environment only (used by the tests)
#   webserver-entrypoint.sh <cmd ...>  any other command, run as is (e.g. `airflow version`)
set -euo pipefail

# shellcheck source=docker/airflow-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/airflow-common.sh"

mode=${1:-api-server}
case "$mode" in
    check)
        preflight_check
        ;;
    init)
        preflight_check || exit 1
        wait_for_metadata_db
        _AIRFLOW_DB_MIGRATE=true migrate_metadata_db_if_asked
        log "Initialisation terminée."
        ;;
    api-server)
        preflight_check || exit 1
        wait_for_metadata_db
        migrate_metadata_db_if_asked
        create_admin_if_asked
        # CleverCloud routes HTTP to port 8080 (PORT is set by the platform) through its HTTPS
        # reverse proxy, hence --proxy-headers.
        exec airflow api-server --host 0.0.0.0 --port "${PORT:-8080}" --proxy-headers
        ;;
    *)
        exec "$@"
        ;;
esac
