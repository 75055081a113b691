"""Task logs in S3, end to end on the test session's Airflow stack (moto's S3 server on loopback).

A tiny DAG runs through the real scheduler and api-server; its task log must land in the logs
bucket under logs/dag_id=…/run_id=…/task_id=…/attempt=1.log, and the REST API must serve it
back from there once the local copy is gone, as on CleverCloud where the webserver app has no
access to the scheduler app's disk.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config

DAG_ID = "qfdmo_test_remote_logging"
TASK_ID = "say_marker"

PROBE_DAG = '''
"""Test-only DAG: prints a marker for test_remote_logging_e2e."""
from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2025, 1, 1), catchup=False,
     tags=["test"], default_args={{"owner": "tests", "retries": 2, "retry_delay": timedelta(seconds=2)}})
def probe():
    @task(task_id="{task_id}")
    def say_marker(**context) -> None:
        print(f"remote logging marker: {{context['dag_run'].conf['marker']}}")

    say_marker()


probe()
'''


def api(stack, method: str, path: str, body: dict | None = None, accept: str = "application/json"):
    request = urllib.request.Request(
        f"{stack.api_url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {stack.token()}", "Content-Type": "application/json", "Accept": accept},
    )
    # Generous: a fresh api-server answers its first execution-API calls slowly on a busy machine.
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"{}")


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def probe_dag(airflow_stack) -> str:
    path = Path(airflow_stack.dags_folder) / f"{DAG_ID}.py"
    path.write_text(PROBE_DAG.format(dag_id=DAG_ID, task_id=TASK_ID))

    def parsed():
        try:
            return api(airflow_stack, "GET", f"/api/v2/dags/{DAG_ID}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise

    wait_until(parsed, 180, f"the dag-processor to parse {DAG_ID}")
    # The execution API builds its versioned routes on first use, which can stall a fresh
    # api-server for tens of seconds on a busy machine: pay that before the task needs it.
    with urllib.request.urlopen(f"{airflow_stack.api_url}/execution/health", timeout=180) as response:
        assert response.status == 200
    api(airflow_stack, "PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    yield DAG_ID
    path.unlink(missing_ok=True)


def s3_client(endpoint_url: str):
    # Same settings as the s3logs connection: explicit endpoint, path-style addressing.
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="qfdmo-dev",
        aws_secret_access_key="qfdmo-dev-secret",
        config=Config(s3={"addressing_style": "path"}),
    )


def test_task_log_is_written_to_s3_and_read_back_through_the_rest_api(airflow_stack, probe_dag: str) -> None:
    marker = uuid.uuid4().hex
    run = api(
        airflow_stack, "POST", f"/api/v2/dags/{probe_dag}/dagRuns", {"logical_date": None, "conf": {"marker": marker}}
    )
    run_id = run["dag_run_id"]
    run_path = f"/api/v2/dags/{probe_dag}/dagRuns/{quote(run_id, safe='')}"

    def finished():
        try:
            state = api(airflow_stack, "GET", run_path)["state"]
        except (TimeoutError, urllib.error.URLError):
            return None
        return state if state in ("success", "failed") else None

    assert wait_until(finished, 300, f"run {run_id} to finish") == "success"

    # The object Airflow's S3 task handler uploaded, under the documented layout (attempt=1
    # unless the busy machine made the first try fail, which retries absorb).
    attempt = api(airflow_stack, "GET", f"{run_path}/taskInstances/{TASK_ID}")["try_number"]
    key = f"logs/dag_id={probe_dag}/run_id={run_id}/task_id={TASK_ID}/attempt={attempt}.log"
    s3 = s3_client(airflow_stack.s3_endpoint_url)

    def uploaded():
        listed = s3.list_objects_v2(Bucket=airflow_stack.logs_bucket, Prefix=key)
        return listed.get("KeyCount", 0) > 0

    wait_until(uploaded, 60, f"s3://{airflow_stack.logs_bucket}/{key}")
    body = s3.get_object(Bucket=airflow_stack.logs_bucket, Key=key)["Body"].read().decode()
    assert marker in body

    # Without the scheduler's local copy, the api-server can only answer from S3.
    local_logs = Path(airflow_stack.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={probe_dag}" / f"run_id={run_id}"
    shutil.rmtree(local_logs, ignore_errors=True)
    served = api(airflow_stack, "GET", f"{run_path}/taskInstances/{TASK_ID}/logs/{attempt}?full_content=true")
    events = [entry.get("event", "") for entry in served["content"]]
    assert f"s3://{airflow_stack.logs_bucket}/{key}" in events, "the log names the object it was read from"
    assert any(marker in event for event in events)


def test_logs_bucket_settings_are_the_ones_documented(airflow_stack) -> None:
    env = airflow_stack.env
    assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "s3logs"
    extra = json.loads(env["AIRFLOW_CONN_S3LOGS"])["extra"]
    assert extra["endpoint_url"] == airflow_stack.s3_endpoint_url
    assert extra["config_kwargs"] == {"s3": {"addressing_style": "path"}}
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"
    assert os.environ.get("AIRFLOW__LOGGING__DELETE_LOCAL_LOGS", "False").lower() != "true"
