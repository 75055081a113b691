#!/usr/bin/env bash
# Entrypoint of airflow-scheduler.Dockerfile: scheduler (LocalExecutor, runs the tasks),
# dag-processor and triggerer in one container, because CleverCloud has no worker-only apps
# and one app per component would triple the cost. This script supervises them: if one
# stops, the others are stopped and the container exits non-zero so the platform restarts
# it; SIGTERM/SIGINT are forwarded to all three.
#   scheduler-entrypoint.sh          checks, waits for the migrated DB, supervises
#   scheduler-entrypoint.sh check    checks the environment only
#   scheduler-entrypoint.sh worker   a Celery worker (CeleryExecutor scale-out) instead of the three
#   scheduler-entrypoint.sh <cmd>    any other command, run as is
# HTTP health on port 8080 is the scheduler's own health server (see the Dockerfile).
set -euo pipefail

# shellcheck source=docker/airflow-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/airflow-common.sh"

# Seconds a component gets to stop after SIGTERM before its process group is killed.
STOP_TIMEOUT=${QFDMO_STOP_TIMEOUT:-30}

declare -A component_of=() # pid -> component name
stop_requested=""

start_component() {
    local name=$1
    shift
    "$@" &
    component_of[$!]=$name
    log "$name démarré (pid $!)."
}

# SIGTERM to each component first (Airflow shuts down gracefully), then SIGKILL to what is
# left of each process group (task subprocesses, log and health servers).
stop_components() {
    local pid deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${!component_of[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${!component_of[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}

# In preprod/prod the bucket may be ahead of the DAGs baked into the image (e.g. a prod tag
# deployed after the image was built): sync once before the dag-processor starts. A failure
# is not fatal: the image's DAGs are a valid tree and download_dags_from_s3 retries.
initial_dag_sync() {
    local script=${SYNC_DAGS_SCRIPT:-/opt/airflow/sync_dags.sh}
    [[ " $QFDMO_PROTECTED_ENVIRONMENTS " == *" ${ENVIRONMENT:-} "* && -x "$script" ]] || return 0
    log "Synchronisation initiale des DAGs ($script)."
    "$script" || log "Synchronisation initiale en échec (code $?): DAGs de l'image conservés."
}

supervise() {
    # Job control gives each component its own process group, so stop_components can
    # reach the processes a component spawned.
    set -m
    trap 'stop_requested=TERM' TERM
    trap 'stop_requested=INT' INT
    trap '' PIPE

    start_component scheduler airflow scheduler
    start_component dag-processor airflow dag-processor
    start_component triggerer airflow triggerer
    # Process groups are set at fork time; monitor mode off again silences bash's job reports.
    set +m

    local died="" status
    while [[ -z "$stop_requested" ]]; do
        set +e
        wait -n -p died "${!component_of[@]}"
        status=$?
        set -e
        # A trapped signal interrupts `wait` without any child having stopped.
        [[ -n "${died:-}" ]] && break
    done

    if [[ -n "$stop_requested" ]]; then
        log "Signal $stop_requested reçu: arrêt des composants."
        stop_components
        log "Composants arrêtés."
        exit 0
    fi
    # The stopped component stays listed: what it spawned may still run in its group.
    log "${component_of[$died]} (pid $died) s'est arrêté (code $status): arrêt des autres composants."
    stop_components
    exit $((status == 0 ? 1 : status))
}

case "${1:-run}" in
    check)
        preflight_check
        ;;
    run)
        preflight_check || exit 1
        wait_for_metadata_db
        # The webserver app (or the compose init service) migrates; starting the scheduler
        # on an old schema would crash it in a loop.
        airflow db check-migrations --migration-wait-timeout "${QFDMO_MIGRATION_WAIT:-300}"
        initial_dag_sync
        supervise
        ;;
    worker)
        # A Celery worker machine (CeleryExecutor): same image, same checks, one component.
        preflight_check || exit 1
        wait_for_metadata_db
        airflow db check-migrations --migration-wait-timeout "${QFDMO_MIGRATION_WAIT:-300}"
        initial_dag_sync
        exec airflow celery worker
        ;;
    *)
        exec "$@"
        ;;
esac
