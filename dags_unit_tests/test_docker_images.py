"""Static checks of the two Airflow images (no Docker engine here: they must be right by construction)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
DOCKERFILES = ["airflow-webserver.Dockerfile", "airflow-scheduler.Dockerfile"]
BASE_IMAGE = "apache/airflow:3.3.2-python3.11"
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|KEY_ID|_KEY\b|SQL_ALCHEMY_CONN|AIRFLOW_CONN_", re.I)


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (REPO / dockerfile).read_text()
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    pairs = []
    for entry in logical:
        keyword, _, args = entry.strip().partition(" ")
        pairs.append((keyword.upper(), args.strip()))
    return pairs


def env_names(pairs: list[tuple[str, str]]) -> list[str]:
    names = []
    for keyword, args in pairs:
        if keyword in ("ENV", "ARG"):
            names += [token.split("=", 1)[0] for token in shlex.split(args)]
    return names


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_is_pinned_official_airflow_for_python_311(dockerfile: str) -> None:
    froms = [args for keyword, args in instructions(dockerfile) if keyword == "FROM"]
    assert froms == [BASE_IMAGE]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_as_airflow_user_and_exposes_8080(dockerfile: str) -> None:
    pairs = instructions(dockerfile)
    users = [args for keyword, args in pairs if keyword == "USER"]
    # 50000 is the uid of `airflow` in the official image; the last USER is what runs.
    assert users and users[-1] in ("airflow", "50000", "50000:0")
    assert ("EXPOSE", "8080") in pairs
    assert pairs[-1][0] == "CMD" and any(keyword == "ENTRYPOINT" for keyword, _ in pairs)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_installs_the_hash_checked_lock_and_copies_dags(dockerfile: str) -> None:
    pairs = instructions(dockerfile)
    copies = [args for keyword, args in pairs if keyword == "COPY"]
    assert any("airflow-requirements.txt" in args for args in copies)
    assert any(re.search(r"\bdags/ /opt/airflow/dags/?$", args) for args in copies)
    assert any(re.search(r"\bdocker/ /opt/qfdmo/docker/?$", args) for args in copies)
    install = " ".join(args for keyword, args in pairs if keyword == "RUN")
    assert "pip install" in install and "--require-hashes" in install and "--no-cache-dir" in install


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_no_secret_is_baked_into_the_image(dockerfile: str) -> None:
    names = env_names(instructions(dockerfile))
    assert names, "the images set their non-secret defaults with ENV"
    assert [name for name in names if SECRET_WORDS.search(name)] == []
    text = (REPO / dockerfile).read_text()
    assert "devonly" not in text and "minioadmin" not in text
    # Without ENVIRONMENT the entrypoints refuse to start; a default would skip the prod checks.
    assert "ENVIRONMENT" not in names


def test_entrypoints_exist_and_are_executable() -> None:
    for script in ("docker/webserver-entrypoint.sh", "docker/scheduler-entrypoint.sh"):
        path = REPO / script
        assert path.stat().st_mode & 0o111, f"{script} must be executable (COPY keeps the mode)"
    for dockerfile, script in zip(DOCKERFILES, ("webserver-entrypoint.sh", "scheduler-entrypoint.sh"), strict=True):
        entrypoint = [args for keyword, args in instructions(dockerfile) if keyword == "ENTRYPOINT"]
        assert entrypoint and f"/opt/qfdmo/docker/{script}" in entrypoint[0]
        assert entrypoint[0].startswith('["/usr/bin/dumb-init"'), "PID 1 must reap zombies and forward signals"


def test_scheduler_image_serves_health_on_8080_and_ships_the_dag_sync() -> None:
    pairs = instructions("airflow-scheduler.Dockerfile")
    env = " ".join(args for keyword, args in pairs if keyword == "ENV")
    assert "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True" in env
    assert "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=8080" in env
    assert "AIRFLOW__CORE__EXECUTOR=LocalExecutor" in env
    copies = [args for keyword, args in pairs if keyword == "COPY"]
    # Where the DAG download_dags_from_s3 looks for the script, and its helper beside it.
    default = re.search(r'SYNC_SCRIPT_DEFAULT = "([^"]+)"', (REPO / "dags" / "download_dags.py").read_text())
    assert default, "dags/download_dags.py no longer declares SYNC_SCRIPT_DEFAULT"
    sync_script = default.group(1)
    assert f"sync_dags.sh {sync_script}" in copies
    helper = str(Path(sync_script).parent / "scripts" / "dags_sync.py")
    assert f"scripts/dags_sync.py {helper}" in copies
    for args in copies:
        source = args.split()[-2]
        assert (REPO / source).exists(), f"COPY source {source} missing from the repository"


def test_build_context_excludes_local_state_and_env_files() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".local", "dags/.env"):
        assert entry in ignored


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), *DOCKERFILES], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_is_clean_on_docker_scripts() -> None:
    scripts = sorted(str(path.relative_to(REPO)) for path in (REPO / "docker").glob("*.sh"))
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "-x", *scripts], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
