"""The images' entrypoint scripts, run for real on this machine with a fake `airflow` on PATH.

The fake records its calls and, for the three scheduler components, behaves as told by the
environment (run until stopped, exit with a code, ignore SIGTERM), spawning a child process
like Airflow's components do, so the tests see what a container would do.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEBSERVER = REPO / "docker" / "webserver-entrypoint.sh"
SCHEDULER = REPO / "docker" / "scheduler-entrypoint.sh"

FAKE_AIRFLOW = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_DIR/calls"
case "$1" in
    db|version) exit 0 ;;
    scheduler|dag-processor|triggerer) component=$1 ;;
    *) exit 0 ;;
esac
var="FAKE_${component//-/_}"
behaviour=${!var:-run}
echo $$ > "$FAKE_DIR/$component.pid"
# A child process, like the task runners and servers of the real components.
sleep 600 &
echo $! > "$FAKE_DIR/$component.child.pid"
case "$behaviour" in
    exit:*) sleep 0.3; exit "${behaviour#exit:}" ;;
    stubborn) trap '' TERM ;;
esac
while true; do sleep 0.1; done
"""

REAL_SECRETS = {
    "AIRFLOW__CORE__FERNET_KEY": "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5MDA=",
    "AIRFLOW__API_AUTH__JWT_SECRET": "3c0b8f1e5a9d4c7e8f2a1b6d9e0c3f5a",
    "AIRFLOW__API__SECRET_KEY": "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
}


@pytest.fixture
def fake_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "airflow"
    fake.write_text(FAKE_AIRFLOW)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_DIR": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "ENVIRONMENT": "development",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:airflow@127.0.0.1:1/airflow",
        "QFDMO_STOP_TIMEOUT": "3",
    }


def template_env() -> dict[str, str]:
    env = {}
    for line in (REPO / "dags" / ".env.template").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def run(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_DIR"]) / "calls"
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped running.
    status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] if Path(f"/proc/{pid}").exists() else "X"
    return status not in ("Z", "X")


def component_pids(env: dict[str, str]) -> list[int]:
    texts = [path.read_text().strip() for path in Path(env["FAKE_DIR"]).glob("*.pid")]
    return [int(text) for text in texts if text]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- preflight checks -------------------------------------------------------------------


@pytest.mark.parametrize("script", [WEBSERVER, SCHEDULER], ids=["webserver", "scheduler"])
def test_development_template_passes_the_checks(script: Path, fake_env: dict[str, str]) -> None:
    result = run(script, "check", env={**fake_env, **template_env()})
    assert result.returncode == 0, result.stderr
    assert "Vérifications préalables OK (ENVIRONMENT=development)" in result.stderr


@pytest.mark.parametrize("environment", ["preprod", "prod"])
def test_protected_environment_refuses_the_development_credentials(environment: str, fake_env: dict[str, str]) -> None:
    env = {**fake_env, **template_env(), **REAL_SECRETS, "ENVIRONMENT": environment}
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 1
    assert f"Démarrage refusé (ENVIRONMENT={environment})" in result.stderr
    assert "identifiants de développement (airflow/airflow)" in result.stderr


def test_protected_environment_refuses_the_template_secrets(fake_env: dict[str, str]) -> None:
    env = {**fake_env, **template_env(), "ENVIRONMENT": "prod", "_AIRFLOW_WWW_USER_PASSWORD": "Xk9-long-real-pass"}
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 1
    for name in REAL_SECRETS:
        assert f"{name} contient la valeur de développement" in result.stderr
    assert "identifiants de développement" not in result.stderr


@pytest.mark.parametrize("missing", sorted(REAL_SECRETS))
@pytest.mark.parametrize("script", [WEBSERVER, SCHEDULER], ids=["webserver", "scheduler"])
def test_protected_environment_refuses_a_missing_secret(script: Path, missing: str, fake_env: dict[str, str]) -> None:
    env = {**fake_env, **REAL_SECRETS, "ENVIRONMENT": "preprod"}
    del env[missing]
    result = run(script, "check", env=env)
    assert result.returncode == 1
    assert f"{missing} est absent" in result.stderr
    # Only the missing one is reported.
    assert sum(f"{name} est absent" in result.stderr for name in REAL_SECRETS) == 1


def test_protected_environment_starts_with_real_secrets(fake_env: dict[str, str]) -> None:
    env = {
        **fake_env,
        **REAL_SECRETS,
        "ENVIRONMENT": "prod",
        "_AIRFLOW_WWW_USER_CREATE": "true",
        "_AIRFLOW_WWW_USER_USERNAME": "admin-qfdmo",
        "_AIRFLOW_WWW_USER_PASSWORD": "Xk9-long-real-pass",
    }
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 0, result.stderr
    # Secrets read from a command (Airflow's _CMD variant) count as configured.
    env["AIRFLOW__CORE__FERNET_KEY_CMD"] = "cat /run/secrets/fernet"
    del env["AIRFLOW__CORE__FERNET_KEY"]
    assert run(WEBSERVER, "check", env=env).returncode == 0


def test_no_secret_value_is_printed(fake_env: dict[str, str]) -> None:
    env = {
        **fake_env,
        **REAL_SECRETS,
        "ENVIRONMENT": "prod",
        "_AIRFLOW_WWW_USER_CREATE": "true",
        "_AIRFLOW_WWW_USER_PASSWORD": "airflow",
    }
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 1
    for value in REAL_SECRETS.values():
        assert value not in result.stderr + result.stdout


@pytest.mark.parametrize("environment", ["", "production"])
def test_unknown_environment_is_refused(environment: str, fake_env: dict[str, str]) -> None:
    result = run(SCHEDULER, "check", env={**fake_env, "ENVIRONMENT": environment})
    assert result.returncode == 1
    assert "ENVIRONMENT" in result.stderr


def test_refused_start_launches_nothing(fake_env: dict[str, str]) -> None:
    env = {**fake_env, "ENVIRONMENT": "prod"}
    assert run(WEBSERVER, env=env).returncode == 1
    assert run(SCHEDULER, env=env).returncode == 1
    assert calls(fake_env) == []


# --- webserver start ----------------------------------------------------------------------


def test_webserver_migrates_when_asked_writes_the_admin_and_starts_the_api_server(fake_env: dict[str, str]) -> None:
    env = {
        **fake_env,
        "_AIRFLOW_DB_MIGRATE": "true",
        "_AIRFLOW_WWW_USER_CREATE": "true",
        "_AIRFLOW_WWW_USER_USERNAME": "airflow",
        "_AIRFLOW_WWW_USER_PASSWORD": "airflow",
    }
    result = run(WEBSERVER, env=env)
    assert result.returncode == 0, result.stderr
    assert calls(fake_env) == ["db check", "db migrate", "api-server --host 0.0.0.0 --port 8080 --proxy-headers"]
    passwords = Path(fake_env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json"
    assert json.loads(passwords.read_text()) == {"airflow": "airflow"}
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600


def test_webserver_does_not_migrate_unless_asked(fake_env: dict[str, str]) -> None:
    result = run(WEBSERVER, env={**fake_env, "_AIRFLOW_DB_MIGRATE": "false"})
    assert result.returncode == 0, result.stderr
    assert "db migrate" not in calls(fake_env)
    assert not (Path(fake_env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json").exists()


def test_init_mode_migrates_and_exits(fake_env: dict[str, str]) -> None:
    result = run(WEBSERVER, "init", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert calls(fake_env) == ["db check", "db migrate"]


def test_webserver_waits_for_the_metadata_db_then_gives_up(fake_env: dict[str, str], tmp_path: Path) -> None:
    failing = tmp_path / "bin" / "airflow"
    failing.write_text('#!/usr/bin/env bash\necho "$*" >> "$FAKE_DIR/calls"\nexit 1\n')
    env = {**fake_env, "QFDMO_DB_WAIT_ATTEMPTS": "3", "QFDMO_DB_WAIT_DELAY": "0"}
    result = run(WEBSERVER, env=env)
    assert result.returncode == 1
    assert "injoignable après 3 essais" in result.stderr
    assert calls(fake_env) == ["db check"] * 3


# --- scheduler supervision ----------------------------------------------------------------


@pytest.fixture
def start_supervisor(fake_env: dict[str, str]):
    started: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        started.append(subprocess.Popen([str(SCHEDULER)], env=env, stderr=subprocess.PIPE, text=True))
        return started[-1]

    yield start
    # Whatever the test did, leave no process behind.
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for pid in component_pids(fake_env):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_scheduler_waits_for_migrations_then_starts_the_three_components(
    fake_env: dict[str, str], start_supervisor
) -> None:
    proc = start_supervisor(fake_env)
    try:
        assert wait_for(lambda: len(component_pids(fake_env)) == 6), "three components and their children"
        assert calls(fake_env)[:2] == ["db check", "db check-migrations --migration-wait-timeout 300"]
        assert sorted(calls(fake_env)[2:]) == ["dag-processor", "scheduler", "triggerer"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.mark.parametrize(("behaviour", "expected_code"), [("exit:3", 3), ("exit:0", 1)])
def test_one_component_dying_stops_the_others_and_exits_non_zero(
    behaviour: str, expected_code: int, fake_env: dict[str, str], start_supervisor
) -> None:
    proc = start_supervisor({**fake_env, "FAKE_triggerer": behaviour})
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == expected_code
    assert "triggerer" in stderr and "arrêt des autres composants" in stderr
    pids = component_pids(fake_env)
    assert len(pids) == 6
    assert wait_for(lambda: not any(alive(pid) for pid in pids)), "no component nor child left behind"


def test_sigterm_stops_every_component_and_their_children(fake_env: dict[str, str], start_supervisor) -> None:
    proc = start_supervisor(fake_env)
    assert wait_for(lambda: len(component_pids(fake_env)) == 6)
    pids = component_pids(fake_env)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "Signal TERM reçu" in stderr
    assert time.monotonic() - started < 3, "well-behaved components stop at once"
    assert wait_for(lambda: not any(alive(pid) for pid in pids))


def test_a_component_ignoring_sigterm_is_killed_after_the_timeout(fake_env: dict[str, str], start_supervisor) -> None:
    proc = start_supervisor({**fake_env, "FAKE_scheduler": "stubborn", "QFDMO_STOP_TIMEOUT": "1"})
    assert wait_for(lambda: len(component_pids(fake_env)) == 6)
    pids = component_pids(fake_env)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert wait_for(lambda: not any(alive(pid) for pid in pids))


def test_scheduler_refuses_the_template_in_prod(fake_env: dict[str, str]) -> None:
    result = run(SCHEDULER, env={**fake_env, **template_env(), "ENVIRONMENT": "prod"})
    assert result.returncode == 1
    assert "AIRFLOW__API_AUTH__JWT_SECRET contient la valeur de développement" in result.stderr
    assert calls(fake_env) == []


def test_metadata_db_comes_from_the_clevercloud_postgresql_addon(fake_env: dict[str, str], tmp_path: Path) -> None:
    spy = tmp_path / "bin" / "airflow"
    spy.write_text('#!/usr/bin/env bash\necho "$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" >> "$FAKE_DIR/calls"\n')
    env = {**fake_env, "POSTGRESQL_ADDON_URI": "postgresql://u:p@bxyz-postgresql.services.clever-cloud.com:5432/bxyz"}
    del env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    result = run(WEBSERVER, "init", env=env)
    assert result.returncode == 0, result.stderr
    assert set(calls(fake_env)) == {"postgresql+psycopg2://u:p@bxyz-postgresql.services.clever-cloud.com:5432/bxyz"}
    assert "u:p@" not in result.stderr, "the URI holds the password: never logged"
    # Neither variable: refused with a message.
    del env["POSTGRESQL_ADDON_URI"]
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 1 and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN n'est pas défini" in result.stderr


def test_protected_environment_refuses_a_passwords_file_with_the_development_credentials(
    fake_env: dict[str, str], tmp_path: Path
) -> None:
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"airflow": "airflow"}))
    env = {
        **fake_env,
        **REAL_SECRETS,
        "ENVIRONMENT": "prod",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    result = run(WEBSERVER, "check", env=env)
    assert result.returncode == 1
    assert "identifiants de développement (airflow/airflow)" in result.stderr
    passwords.write_text(json.dumps({"admin-qfdmo": "Xk9-long-real-pass"}))
    assert run(WEBSERVER, "check", env=env).returncode == 0


def test_worker_mode_checks_waits_for_migrations_then_runs_one_celery_worker(fake_env: dict[str, str]) -> None:
    result = run(SCHEDULER, "worker", env=fake_env)
    assert result.returncode == 0, result.stderr
    assert calls(fake_env)[-2:] == ["db check-migrations --migration-wait-timeout 300", "celery worker"]
    assert not component_pids(fake_env), "a worker machine runs no scheduler, dag-processor or triggerer"


def test_worker_mode_refuses_the_template_in_prod(fake_env: dict[str, str]) -> None:
    result = run(SCHEDULER, "worker", env={**fake_env, **template_env(), "ENVIRONMENT": "prod"})
    assert result.returncode != 0
    assert "celery worker" not in calls(fake_env)
