"""The local stack as `make run`/`make up` start it: health, CLI, import errors, ports, shutdown."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from stack_runs import dag_parsed

from devstack import postgres as devstack_postgres
from devstack.config import REPO_ROOT
from devstack.processes import StackError, free_port, processes_in_group, wait_until


def test_every_component_reports_healthy(airflow_stack):
    health = airflow_stack.stack.health()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert health[component]["status"] == "healthy", health


def test_cli_sees_the_stack_connections(airflow_stack):
    # Both CLI calls at once: each is seconds of Airflow imports, mostly waiting on the other core.
    with ThreadPoolExecutor(2) as pool:
        connection, s3logs = (found[0] for found in pool.map(
            lambda conn_id: airflow_stack.airflow_json("connections", "get", conn_id), ("qfdmo_django_db", "s3logs")))
    assert connection["conn_type"] == "postgres"
    assert connection["port"] == str(airflow_stack.config.ports.postgres)
    assert connection["schema"] == "qfdmo"
    assert s3logs["extra_dejson"]["endpoint_url"] == airflow_stack.s3_endpoint_url


def _import_errors(airflow_stack) -> list[dict]:
    # The command exits 1 when there are errors, which is what makes it a parse gate.
    return airflow_stack.airflow_json("dags", "list-import-errors", check=False)


def _dag_ids(airflow_stack) -> set[str]:
    return {dag["dag_id"] for dag in airflow_stack.airflow_json("dags", "list")}


def _import_error_files(airflow_stack) -> set[str]:
    """What the dag-processor recorded, through the REST API: the waits poll this (a CLI call
    imports all of Airflow, seconds of CPU each); the CLI is then asked once what it shows."""
    errors = airflow_stack.api("GET", "/api/v2/importErrors")["import_errors"]
    return {error["filename"] for error in errors}


def test_broken_dag_file_is_listed_while_the_platform_keeps_running(airflow_stack):
    # The dag-processor has parsed the real DAGs, without any import error.
    wait_until(lambda: dag_parsed(airflow_stack, "download_dags_from_s3"), "the DAGs to be parsed", 120,
               interval=0.3)
    assert "download_dags_from_s3" in _dag_ids(airflow_stack)
    assert not _import_error_files(airflow_stack)

    broken = airflow_stack.dags_folder / "broken_example_dag.py"
    broken.write_text("from airflow.sdk import dag\n\nthis is not python\n")
    try:
        wait_until(lambda: any(f.endswith("broken_example_dag.py") for f in _import_error_files(airflow_stack)),
                   "the import error", 90, interval=0.3)
        errors = _import_errors(airflow_stack)
        assert any("broken_example_dag.py" in error["filepath"] for error in errors), errors
        assert dag_parsed(airflow_stack, "download_dags_from_s3")
        assert airflow_stack.stack.healthy()
    finally:
        broken.unlink()
    wait_until(lambda: not _import_error_files(airflow_stack), "the import error to clear", 90, interval=0.3)
    assert _import_errors(airflow_stack) == []


def test_busy_port_gives_a_clear_message_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "QFDMO_STACK_DIR": str(tmp_path), "QFDMO_API_PORT": str(port),
               "QFDMO_POSTGRES_PORT": str(free_port()), "QFDMO_S3_PORT": str(free_port()),
               "QFDMO_WORKER_LOGS_PORT": str(free_port()), "QFDMO_TRIGGER_LOGS_PORT": str(free_port())}
        result = subprocess.run([sys.executable, "-m", "devstack", "up"], env=env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"port {port} (QFDMO_API_PORT" in result.stderr + result.stdout
    assert not (tmp_path / "postgres").exists(), "PostgreSQL was initialised despite the busy port"
    assert not (tmp_path / "stack.pid").exists()


def test_missing_postgres_without_root_says_what_to_install(monkeypatch):
    monkeypatch.setattr(devstack_postgres, "missing_packages", lambda: ["postgresql-15-postgis-3"])
    monkeypatch.setattr(devstack_postgres.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError) as error:
        devstack_postgres.provision()
    assert "apt-get install" in str(error.value)
    assert "postgresql-15-postgis-3" in str(error.value)


@pytest.mark.e2e  # starts the whole local stack itself (`make up` then `make down`)
def test_up_then_down_leaves_no_process(tmp_path):
    env = {**os.environ, "QFDMO_STACK_DIR": str(tmp_path)}
    env.update({f"QFDMO_{name}_PORT": str(free_port())
                for name in ("POSTGRES", "S3", "API", "WORKER_LOGS", "TRIGGER_LOGS")})
    up = subprocess.run([sys.executable, "-m", "devstack", "up"], env=env, cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    supervisor = int((tmp_path / "stack.pid").read_text())
    pgids = [int(p) for p in (tmp_path / "stack.pgids").read_text().split()] + [supervisor]
    assert all(processes_in_group(pgid) for pgid in pgids[:-1])

    down = subprocess.run([sys.executable, "-m", "devstack", "down"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert [pid for pgid in pgids for pid in processes_in_group(pgid)] == []
    assert not os.path.exists(f"/proc/{supervisor}")


@pytest.mark.parametrize("command, preloads", [
    (["scheduler"], True),
    (["celery", "worker", "--celery-hostname", "worker1@%h"], True),
    (["api-server", "--port", "8080"], False),
    (["dags", "test", "compute_acteurs"], False),
])
def test_local_settings_preload_the_task_libraries_where_tasks_are_forked(command, preloads):
    """The scheduler and the Celery workers import psycopg, boto3 and requests at start (their forked
    tasks then start with them); no other Airflow process pays for it, and `qfdmo` is never preloaded."""
    settings = REPO_ROOT / "devstack" / "airflow_local_settings.py"
    probe = (f"import runpy, sys; sys.argv = {['airflow', *command]!r}; runpy.run_path({str(settings)!r});"
             " print(sorted(m for m in ('boto3', 'psycopg', 'requests', 'qfdmo') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == str(["boto3", "psycopg", "requests"] if preloads else [])
