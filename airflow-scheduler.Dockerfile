# Airflow 3 scheduler (LocalExecutor: tasks run in this container), dag-processor and
# triggerer of the QFDMO data platform, supervised by docker/scheduler-entrypoint.sh.
# One CleverCloud Docker app per environment (CC_DOCKERFILE=airflow-scheduler.Dockerfile);
# also the `airflow-scheduler` service of docker-compose.yml.
# Tasks reach the webserver app's execution API: set AIRFLOW__CORE__EXECUTION_API_SERVER_URL
# (http://<webserver>/execution/) and the secrets shared with the webserver
# (AIRFLOW__CORE__FERNET_KEY, AIRFLOW__API_AUTH__JWT_SECRET, AIRFLOW__API__SECRET_KEY).
# Nothing secret here: every secret comes from the app's environment at run time. No default
# ENVIRONMENT either: an app deployed without it refuses to start instead of running as
# development (which skips the production checks).
FROM apache/airflow:3.3.2-python3.11

# Runtime dependencies from the hash-checked lock (boto3 included: the DAG sync uses it).
COPY --chown=airflow:root airflow-requirements.txt /tmp/airflow-requirements.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/airflow-requirements.txt \
    && rm -f /tmp/airflow-requirements.txt

# CleverCloud only runs apps that answer HTTP on 8080: the scheduler's own health server
# (GET /health -> 200 while its heartbeat is fresh, 503 otherwise) listens there.
# Parallelism bounds the LocalExecutor's worker processes (and the memory they hold).
# Tasks call the webserver app through CleverCloud's proxy, and a freshly started api-server
# answers its first execution-API calls slowly: 30 s per call instead of Airflow's 5 s.
# DAGs synced from S3 are seen within 30 s (defaults: 5 min for new files, 30 s for edits).
ENV AIRFLOW__CORE__EXECUTOR=LocalExecutor \
    AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=30 \
    AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL=30 \
    AIRFLOW__CORE__PARALLELISM=4 \
    AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT=30 \
    QFDMO_DATA_DIR=/opt/airflow/data \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True \
    AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=8080 \
    PYTHONPATH=/opt/airflow/dags

# Entrypoint scripts stay root-owned (the airflow user runs them but cannot change them);
# they keep their executable bit from git (no --chmod: it needs BuildKit).
COPY docker/ /opt/qfdmo/docker/
# DAG delivery: the DAG download_dags_from_s3 runs /opt/airflow/sync_dags.sh, which finds its
# helper at scripts/dags_sync.py beside it (and the helper its package scripts/dags_delivery/);
# all stay outside the DAG folder (which a sync replaces by a symlink to the new release, hence
# /opt/airflow must stay writable).
COPY sync_dags.sh /opt/airflow/sync_dags.sh
COPY scripts/dags_sync.py /opt/airflow/scripts/dags_sync.py
COPY scripts/dags_delivery/ /opt/airflow/scripts/dags_delivery/
# The DAG folder belongs to airflow: sync_dags.sh mirrors the environment's bucket into it.
COPY --chown=airflow:root dags/ /opt/airflow/dags/

# Fails the build if sync_dags.sh's interpreter (python3 -E -s: no PYTHONPATH, no user site)
# cannot see botocore or the sync's package. $QFDMO_DATA_DIR exists in the image, owned by
# airflow, so a volume mounted there (compose) starts with that owner.
RUN python3 -E -s -c "import botocore.session, airflow.providers.amazon" \
    && python3 -E -s -c "import sys; sys.path.insert(0, '/opt/airflow/scripts'); import dags_delivery.sync" \
    && install -d -o 50000 -g 0 /opt/airflow/data

# 50000:0 is the `airflow` user of the official image (numeric, so platforms that require
# a non-root UID can verify it).
USER 50000:0
WORKDIR /opt/airflow
EXPOSE 8080

ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/qfdmo/docker/scheduler-entrypoint.sh"]
CMD ["run"]
