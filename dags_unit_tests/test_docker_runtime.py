"""The images' entrypoints with the real Airflow, run as the two CleverCloud apps would run them.

Two "containers" on this machine: the webserver entrypoint (migrates, writes the admin account,
starts the api-server) and the scheduler entrypoint (waits for the migrated DB, supervises
scheduler + dag-processor + triggerer, health on the scheduler's own server), each with its own
AIRFLOW_HOME, sharing only the metadata database, the secrets and the execution API URL,
with ENVIRONMENT=preprod so the production checks are the ones that pass.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devstack.processes import free_port

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"


def http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the entrypoint exited with {proc.returncode}")
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def containers(postgres, tmp_path: Path):
    database = f"airflow_docker_{os.getpid()}"
    postgres.create_database(database)
    ports = {name: free_port() for name in ("api", "health", "worker_logs", "trigger_logs")}
    dags = tmp_path / "dags"
    dags.mkdir()
    common = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ENVIRONMENT": "preprod",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": postgres.dsn(database).replace(
            "postgresql://", "postgresql+psycopg2://"
        ),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(48),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['api']}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(ports["worker_logs"]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(ports["trigger_logs"]),
        "QFDMO_STOP_TIMEOUT": "20",
    }
    admin_password = secrets.token_urlsafe(16)
    webserver_env = {
        **common,
        "AIRFLOW_HOME": str(tmp_path / "webserver"),
        "PORT": str(ports["api"]),
        "AIRFLOW__API__WORKERS": "1",
        "_AIRFLOW_DB_MIGRATE": "true",
        "_AIRFLOW_WWW_USER_CREATE": "true",
        "_AIRFLOW_WWW_USER_USERNAME": "admin-qfdmo",
        "_AIRFLOW_WWW_USER_PASSWORD": admin_password,
    }
    scheduler_env = {
        **common,
        "AIRFLOW_HOME": str(tmp_path / "scheduler"),
        # What airflow-scheduler.Dockerfile sets, on a free port instead of 8080.
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(ports["health"]),
    }
    started: list[subprocess.Popen] = []

    def start(script: str, env: dict[str, str]) -> subprocess.Popen:
        log = open(tmp_path / f"{script}.log", "w")
        proc = subprocess.Popen(
            [str(REPO / "docker" / script)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        started.append(proc)
        return proc

    handle = {
        "start": start,
        "webserver_env": webserver_env,
        "scheduler_env": scheduler_env,
        "ports": ports,
        "admin_password": admin_password,
        "logs": tmp_path,
    }
    yield handle
    for proc in started:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    # A throwaway server: a failed clean-up must not hide the test's outcome.
    with contextlib.suppress(Exception):
        postgres.drop_database(database)


def test_webserver_and_scheduler_entrypoints_run_airflow_like_the_two_apps(containers) -> None:
    ports = containers["ports"]
    api = f"http://127.0.0.1:{ports['api']}"
    # Both apps start at once, as a deploy starts them: the scheduler side waits for the webserver's
    # migration (`airflow db check-migrations`).
    webserver = containers["start"]("webserver-entrypoint.sh", containers["webserver_env"])
    scheduler = containers["start"]("scheduler-entrypoint.sh", containers["scheduler_env"])

    def api_up() -> bool:
        status, body = http(f"{api}/api/v2/monitor/health")
        return status == 200 and json.loads(body)["metadatabase"]["status"] == "healthy"

    wait_for(api_up, 240, "the api-server (after db migrate)", webserver)

    # The account from the environment works; the development credentials do not.
    status, body = http(f"{api}/auth/token", {"username": "admin-qfdmo", "password": containers["admin_password"]})
    assert status == 201 and json.loads(body)["access_token"]
    assert http(f"{api}/auth/token", {"username": "airflow", "password": "airflow"})[0] == 401
    passwords = Path(containers["webserver_env"]["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json"
    assert oct(passwords.stat().st_mode & 0o777) == "0o600"

    health = f"http://127.0.0.1:{ports['health']}/health"
    wait_for(lambda: http(health)[0] == 200, 240, "the scheduler's health server", scheduler)

    def all_healthy() -> bool:
        status, body = http(f"{api}/api/v2/monitor/health")
        return status == 200 and all(part["status"] == "healthy" for part in json.loads(body).values())

    wait_for(all_healthy, 180, "scheduler, dag-processor and triggerer healthy in /api/v2/monitor/health", scheduler)

    # One component dying takes the container down, non-zero, with nothing left behind.
    tree = descendants(scheduler.pid)
    triggerer = min(pid for pid in tree if "triggerer" in cmdline(pid))
    os.kill(triggerer, signal.SIGKILL)
    assert scheduler.wait(timeout=60) != 0
    wait_for(lambda: not any(running(pid) for pid in tree), 30, "every scheduler-side process to stop")
    assert "triggerer" in (containers["logs"] / "scheduler-entrypoint.sh.log").read_text()

    # SIGTERM stops the api-server (the entrypoint exec'd it: same pid).
    web_tree = descendants(webserver.pid)
    webserver.send_signal(signal.SIGTERM)
    webserver.wait(timeout=60)
    wait_for(lambda: not any(running(pid) for pid in web_tree), 30, "every api-server process to stop")
