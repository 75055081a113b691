# Airflow 3 api-server of the QFDMO data platform: UI, REST API and the execution API that
# the scheduler app's tasks call. One CleverCloud Docker app per environment
# (CC_DOCKERFILE=airflow-webserver.Dockerfile); also the `airflow-webserver` and
# `airflow-init` services of docker-compose.yml.
# Nothing secret here: every secret comes from the app's environment at run time. No default
# ENVIRONMENT either: an app deployed without it refuses to start instead of running as
# development (which skips the production checks).
FROM apache/airflow:3.3.2-python3.11

# Runtime dependencies from the hash-checked lock.
COPY --chown=airflow:root airflow-requirements.txt /tmp/airflow-requirements.txt
RUN pip install --no-cache-dir --require-hashes -r /tmp/airflow-requirements.txt \
    && rm -f /tmp/airflow-requirements.txt

ENV AIRFLOW__CORE__EXECUTOR=LocalExecutor \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    PYTHONPATH=/opt/airflow/dags

# Entrypoint scripts stay root-owned (the airflow user runs them but cannot change them);
# they keep their executable bit from git (no --chmod: it needs BuildKit).
COPY docker/ /opt/qfdmo/docker/
COPY --chown=airflow:root dags/ /opt/airflow/dags/

# 50000:0 is the `airflow` user of the official image (numeric, so platforms that require
# a non-root UID can verify it).
USER 50000:0
WORKDIR /opt/airflow
EXPOSE 8080

ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/qfdmo/docker/webserver-entrypoint.sh"]
CMD ["api-server"]
