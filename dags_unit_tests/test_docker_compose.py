"""Static checks of docker-compose.yml and dags/.env.template (no Docker engine on our machines)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
AIRFLOW_SERVICES = ("airflow-init", "airflow-webserver", "airflow-scheduler")
CELERY_SERVICES = ("valkey", "airflow-worker-1", "airflow-worker-2")

# Variables read somewhere with a working default, that a development stack need not set.
OPTIONAL_VARIABLES = {
    "AIRFLOW_HOME": "set by the official image",
    "PORT": "set by CleverCloud; 8080 otherwise",
    "POSTGRESQL_ADDON_URI": "CleverCloud add-on; compose sets AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "CELLAR_ADDON_REGION": "sync: Cellar's region is the default",
    "DAGS_S3_PREFIX": "sync: optional key prefix in the bucket",
    "DAGS_SYNC_HELPER": "sync: helper beside sync_dags.sh by default",
    "DAGS_SYNC_PYTHON": "sync: python3 on PATH by default",
    "DAGS_SYNC_PROTECTED": "sync: files never touched, sensible default",
    "DAGS_SYNC_RELEASES_DIR": "sync: beside the DAG folder by default",
    "DAGS_SYNC_MAX_OBJECT_BYTES": "sync: 10 MB by default",
    "DAGS_SYNC_WORKERS": "sync: 16 download threads by default",
    "DAGS_SYNC_MANIFEST_RETRIES": "sync: 3 retries while a deploy uploads, by default",
    "DAGS_SYNC_MANIFEST_RETRY_WAIT": "sync: 5 s between those retries by default",
    **dict.fromkeys(
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "DAGS_BUCKET", "DAGS_SOURCE_DIR")
        + ("DEPLOY_ID", "GITHUB_SHA", "S3_ENDPOINT_URL"),
        "deploy (scripts/deploy_dags.sh, CI side): never read by the containers",
    ),
    "SYNC_DAGS_SCRIPT": "download DAG: /opt/airflow/sync_dags.sh by default",
    "QFDMO_STOP_TIMEOUT": "entrypoint: 30 s grace period by default",
    "QFDMO_DB_WAIT_ATTEMPTS": "entrypoint: 30 attempts by default",
    "QFDMO_DB_WAIT_DELAY": "entrypoint: 2 s by default",
    "QFDMO_MIGRATION_WAIT": "entrypoint: 300 s by default",
    "AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH": "entrypoint: alternative to the JWT secret",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "entrypoint: refused in preprod/prod",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "entrypoint: under AIRFLOW_HOME by default",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "entrypoint: alternative form",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_SECRET": "entrypoint: alternative form",
}


def template() -> dict[str, str]:
    values = {}
    for line in (REPO / "dags" / ".env.template").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            assert not (value.startswith(("'", '"')) and value.endswith(("'", '"'))), f"quoted value: {key}"
            values[key] = value
    return values


def referenced_variables() -> set[str]:
    """Environment variables read by the DAGs, the DAG sync and the entrypoints."""
    names: set[str] = set()
    python_read = re.compile(
        r"""(?:environ\.get|getenv|env\.get|setdefault)\(\s*"([A-Z_][A-Z0-9_]*)"|"""
        r"""(?:environ|env)\[\s*"([A-Z_][A-Z0-9_]*)"\s*\]|"""
        # the typed readers of dags_delivery/settings.py and qfdmo/settings.py
        r'\bread\.(?:text|required|number|path|integer)\(\s*"([A-Z_][A-Z0-9_]*)"'
    )
    for path in [*(REPO / "dags").rglob("*.py"), *(REPO / "scripts" / "dags_delivery").glob("*.py")]:
        if path.exists():
            for match in python_read.finditer(path.read_text()):
                names.add(next(name for name in match.groups() if name))
    shell_read = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?[-?=+])")
    for path in [REPO / "sync_dags.sh", *(REPO / "docker").glob("*.sh")]:
        if path.exists():
            names.update(shell_read.findall(path.read_text()))
    return names


def test_services_and_profiles() -> None:
    assert set(SERVICES) == {
        "carte-db",
        "carte-db-init",
        "airflow-db",
        "minio",
        "minio-init",
        *AIRFLOW_SERVICES,
        *CELERY_SERVICES,
    }
    # Without the profile, only the carte database comes up (what the Django app needs).
    assert {name for name, service in SERVICES.items() if "profiles" not in service} == {"carte-db", "carte-db-init"}
    for name, service in SERVICES.items():
        expected = ["celery"] if name in CELERY_SERVICES else ["airflow"]
        assert service.get("profiles", ["airflow"]) == expected, name


def test_celery_profile_broker_and_two_workers_from_the_scheduler_image() -> None:
    for name in ("airflow-worker-1", "airflow-worker-2"):
        worker = SERVICES[name]
        assert worker["build"]["dockerfile"] == "airflow-scheduler.Dockerfile"
        assert worker["command"] == ["worker"]
        assert worker["hostname"] == name, "the webserver reads running tasks' logs from <hostname>:8793"
        assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
        assert worker["depends_on"]["valkey"]["condition"] == "service_healthy"
        # A killed worker comes back; a stopped one finishes its running tasks first.
        assert worker["restart"] == "unless-stopped"
        assert worker["init"] is True
        assert worker["stop_grace_period"] == "10m"
    assert "valkey-cli" in SERVICES["valkey"]["healthcheck"]["test"]
    template = (REPO / "dags" / ".env.template").read_text()
    assert "AIRFLOW__CORE__EXECUTOR=LocalExecutor" in template, "LocalExecutor stays the default"
    assert "AIRFLOW__CELERY__BROKER_URL=redis://valkey:6379/0" in template
    assert "qfdmo.airflow.celery_executor.BrokerAwareCeleryExecutor" in template


def test_ports_carte_db_6543_ui_8080() -> None:
    assert SERVICES["carte-db"]["ports"] == ["6543:5432"]
    assert SERVICES["airflow-webserver"]["ports"] == ["8080:8080"]
    assert "ports" not in SERVICES["airflow-scheduler"], "8080 on the host is the UI's"


def test_images_are_pinned_and_airflow_services_built_from_our_dockerfiles() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            assert service["build"]["dockerfile"] in ("airflow-webserver.Dockerfile", "airflow-scheduler.Dockerfile")
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        else:
            tag = service["image"].rsplit(":", 1)
            assert len(tag) == 2 and tag[1] not in ("latest", ""), f"{name}: unpinned image"
    assert SERVICES["carte-db"]["image"].startswith("postgis/postgis:15-3.")
    assert SERVICES["airflow-db"]["image"] == "postgres:15"
    assert SERVICES["airflow-webserver"]["build"]["dockerfile"] == "airflow-webserver.Dockerfile"
    assert SERVICES["airflow-scheduler"]["build"]["dockerfile"] == "airflow-scheduler.Dockerfile"


def test_long_running_services_have_health_checks() -> None:
    for name in ("carte-db", "airflow-db", "minio", "airflow-webserver", "airflow-scheduler"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "/api/v2/monitor/health" in " ".join(SERVICES["airflow-webserver"]["healthcheck"]["test"])
    assert "localhost:8080/health" in " ".join(SERVICES["airflow-scheduler"]["healthcheck"]["test"])


def test_depends_on_waits_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} -> {target}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target}'s health, which has none"
            else:
                assert condition["condition"] == "service_completed_successfully", f"{name} -> {target}"
                assert target.endswith("-init"), f"{target} is not a one-shot service"
    scheduler = SERVICES["airflow-scheduler"]["depends_on"]
    assert scheduler["airflow-init"]["condition"] == "service_completed_successfully"
    assert scheduler["carte-db-init"]["condition"] == "service_completed_successfully"
    assert scheduler["airflow-webserver"]["condition"] == "service_healthy", "tasks need the execution API"
    assert SERVICES["airflow-webserver"]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_airflow_services_read_dags_env_and_init_migrates() -> None:
    for name in AIRFLOW_SERVICES:
        assert SERVICES[name]["env_file"] == "dags/.env", name
    assert SERVICES["airflow-init"]["command"] == ["init"]
    assert SERVICES["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert SERVICES["carte-db-init"]["entrypoint"] == ["python", "-m", "qfdmo.carte_db", "migrate"]


def test_template_matches_the_compose_services() -> None:
    env = template()
    carte = SERVICES["carte-db"]["environment"]
    for url in (
        env["AIRFLOW_CONN_QFDMO_DJANGO_DB"],
        env["CARTE_DB_DSN"],
        SERVICES["carte-db-init"]["environment"]["CARTE_DB_DSN"],
    ):
        parts = urlsplit(url)
        assert (parts.username, parts.password, parts.hostname, parts.port, parts.path) == (
            carte["POSTGRES_USER"],
            carte["POSTGRES_PASSWORD"],
            "carte-db",
            5432,
            "/" + carte["POSTGRES_DB"],
        )
    airflow_db = SERVICES["airflow-db"]["environment"]
    parts = urlsplit(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (parts.username, parts.password, parts.hostname, parts.path) == (
        airflow_db["POSTGRES_USER"],
        airflow_db["POSTGRES_PASSWORD"],
        "airflow-db",
        "/" + airflow_db["POSTGRES_DB"],
    )
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-webserver:8080/execution/"
    # The buckets the logs and the DAG sync use are the ones minio-init creates.
    created = " ".join(SERVICES["minio-init"]["command"])
    logs_bucket = urlsplit(env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"]).hostname
    assert f"local/{logs_bucket}" in created and f"local/{env['CELLAR_ADDON_BUCKET']}" in created
    minio = SERVICES["minio"]["environment"]
    s3logs = json.loads(env["AIRFLOW_CONN_S3LOGS"])
    assert (s3logs["login"], s3logs["password"]) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert (env["CELLAR_ADDON_KEY_ID"], env["CELLAR_ADDON_KEY_SECRET"]) == (s3logs["login"], s3logs["password"])


def test_template_configures_task_logs_in_s3() -> None:
    env = template()
    assert env["AIRFLOW__LOGGING__REMOTE_LOGGING"] == "true"
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].startswith("s3://")
    assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"].endswith("/logs")
    assert env["AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID"] == "s3logs"
    assert env["AIRFLOW__LOGGING__ENCRYPT_S3_LOGS"] == "false"
    assert env["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"
    assert env["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"
    s3logs = json.loads(env["AIRFLOW_CONN_S3LOGS"])
    assert s3logs["conn_type"] == "aws"
    assert s3logs["extra"]["endpoint_url"] == "http://minio:9000"
    assert s3logs["extra"]["region_name"]
    assert s3logs["extra"]["config_kwargs"] == {"s3": {"addressing_style": "path"}}


def test_template_is_development_only() -> None:
    env = template()
    assert env["ENVIRONMENT"] == "development"
    Fernet(env["AIRFLOW__CORE__FERNET_KEY"])  # a valid key, or Airflow refuses to start
    for name in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert "devonly" in env[name].lower(), f"{name} must carry the marker the entrypoints refuse in prod"
    assert (env["_AIRFLOW_WWW_USER_USERNAME"], env["_AIRFLOW_WWW_USER_PASSWORD"]) == ("airflow", "airflow")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "airflow:admin"


def test_template_lists_every_variable_the_platform_reads() -> None:
    env = template()
    missing = sorted(
        name for name in referenced_variables() - set(env) - set(OPTIONAL_VARIABLES) if not name.startswith("FAKE_")
    )
    assert missing == [], f"add them to dags/.env.template (or to OPTIONAL_VARIABLES with a reason): {missing}"
    # Every connection id used by the DAGs comes from the environment.
    conn_ids = set()
    for path in (REPO / "dags").rglob("*.py"):
        conn_ids.update(re.findall(r'CONN_ID\s*=\s*"([a-z0-9_]+)"|conn_id\s*=\s*"([a-z0-9_]+)"', path.read_text()))
    for conn_id in {name for pair in conn_ids for name in pair if name} | {"qfdmo_django_db", "s3logs"}:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in env, conn_id


def test_env_file_is_git_ignored_and_template_is_not() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "dags/.env"], cwd=REPO, check=False)
    assert ignored.returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "dags/.env.template"], cwd=REPO, check=False).returncode == 1


def _working_compose() -> list[str] | None:
    """A compose command that answers, or None: a `docker` CLI may ship without its compose plugin
    (`docker compose` is then an unknown command), so the binary's presence proves nothing."""
    for command in (["docker-compose"], ["docker", "compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return command
    return None


COMPOSE_COMMAND = _working_compose()


@pytest.mark.skipif(
    COMPOSE_COMMAND is None,
    reason="no working compose implementation (Debian: apt-get install docker-compose)",
)
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """Compose's own validation, on a copy beside a dags/.env made from the template."""
    for name in ("docker-compose.yml", "airflow-webserver.Dockerfile", "airflow-scheduler.Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "dags").mkdir()
    shutil.copy(REPO / "dags" / ".env.template", tmp_path / "dags" / ".env")
    assert COMPOSE_COMMAND is not None
    result = subprocess.run(
        [*COMPOSE_COMMAND, "--profile", "airflow", "config"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(SERVICES)
    webserver_env = resolved["services"]["airflow-webserver"]["environment"]
    assert json.loads(webserver_env["AIRFLOW_CONN_S3LOGS"])["extra"]["endpoint_url"] == "http://minio:9000"
    assert resolved["services"]["airflow-init"]["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
