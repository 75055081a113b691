"""Runs the carte's dbt project (dags/qfdmo/carte_dbt) in process.

The project ships with the DAGs (same S3 sync, same release), so it may sit in a read-only release
folder: dbt's target/ and logs/ go to a scratch folder. The profile (profiles.yml in the project)
reads the connection from QFDMO_CARTE_DB_* variables, set here from the DSN for the duration of one
invocation: no credential is ever written to a file. Builds of the project are serialised by an
advisory lock (compute_acteurs and export_opendata both build it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

PROJECT_DIR = Path(__file__).resolve().parent.parent / "carte_dbt"
SCHEMA = "qfdmo_carte"
_BUILD_LOCK_KEY = 7_146_201_011  # shared by every build of the project
_PROFILE_VARIABLES = {
    "host": "QFDMO_CARTE_DB_HOST",
    "port": "QFDMO_CARTE_DB_PORT",
    "user": "QFDMO_CARTE_DB_USER",
    "password": "QFDMO_CARTE_DB_PASSWORD",
    "dbname": "QFDMO_CARTE_DB_NAME",
}

# The build's sessions only. Two dbt threads already fill the two cores: a parallel plan would
# make each worker build the same hash tables again; JIT compiles every large statement for one
# execution; the models are rebuilt from the webapp's tables at each run, so a commit need not wait
# for the WAL flush. Memory: hash joins and sorts of a few million rows, index builds. Statistics
# from 9,000 sampled rows instead of 30,000: row counts and key distributions are what the joins
# need, and sampling is most of a post-hook ANALYZE's time.
BUILD_SETTINGS = {
    "default_statistics_target": "30",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    "work_mem": "128MB",
    "maintenance_work_mem": "256MB",
    "synchronous_commit": "off",
}

log = logging.getLogger(__name__)


class DbtBuildError(RuntimeError):
    """`dbt build` did not pass: a model failed or a test found rows. Nothing was swapped."""

    def __init__(self, message: str, result: DbtResult):
        super().__init__(message)
        self.result = result


@dataclass
class DbtResult:
    success: bool
    seconds: float
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [n for n in self.nodes if n["status"] not in ("success", "pass", "skipped")]

    def summary(self) -> dict[str, Any]:
        models = [n for n in self.nodes if n["resource_type"] == "model"]
        tests = [n for n in self.nodes if n["resource_type"] == "test"]
        return {
            "success": self.success,
            "seconds": round(self.seconds, 2),
            "models": len(models),
            "tests": len(tests),
            "models_seconds": round(sum(n["seconds"] for n in models), 2),
            "tests_seconds": round(sum(n["seconds"] for n in tests), 2),
            "skipped": sum(1 for n in self.nodes if n["status"] == "skipped"),
            "failures": self.failures[:20],
        }


@contextmanager
def _profile_environment(dsn: str, scratch: Path) -> Iterator[None]:
    params = conninfo_to_dict(dsn)
    values = {var: str(params.get(key) or "") for key, var in _PROFILE_VARIABLES.items()}
    values["QFDMO_CARTE_DB_HOST"] = values["QFDMO_CARTE_DB_HOST"] or "localhost"
    values["QFDMO_CARTE_DB_PORT"] = values["QFDMO_CARTE_DB_PORT"] or "5432"
    values.update({
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET_PATH": str(scratch / "target"),
        "DBT_LOG_PATH": str(scratch / "logs"),
        # libpq reads these server settings for every connection dbt opens (see BUILD_SETTINGS).
        "PGOPTIONS": " ".join(f"-c {name}={value}" for name, value in BUILD_SETTINGS.items()),
    })
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def build_lock(dsn: str) -> Iterator[None]:
    """Holds the project's build lock (a second build waits for the first)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_BUILD_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_BUILD_LOCK_KEY,))


def build(dsn: str, scratch: Path, select: Sequence[str] = (), full_refresh: bool = False,
          exclude: Sequence[str] = ()) -> DbtResult:
    """`dbt build` (models, then their tests) of the project, or of `select` minus `exclude`; raises
    DbtBuildError when it does not pass. `scratch` receives target/ (with dbt's partial-parse cache)
    and logs/."""
    from dbt.cli.main import dbtRunner

    scratch.mkdir(parents=True, exist_ok=True)
    args = ["build", "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
            "--target-path", str(scratch / "target"), "--log-path", str(scratch / "logs")]
    for selector in select:
        args += ["--select", selector]
    if select:
        # Only the tests whose every model is selected: a test that also reads a model outside the
        # selection (export_opendata's `+opendata_acteur` leaves out carte_acteur) would fail on a
        # database where that model was never built, a first deploy for instance.
        args += ["--indirect-selection", "cautious"]
    for selector in exclude:
        args += ["--exclude", selector]
    if full_refresh:
        args.append("--full-refresh")
    started = time.perf_counter()
    with build_lock(dsn), _profile_environment(dsn, scratch):
        outcome = dbtRunner().invoke(args)
    result = DbtResult(success=bool(outcome.success), seconds=time.perf_counter() - started,
                       nodes=_nodes(outcome.result))
    log.info("dbt build: %s in %.1f s", "passed" if result.success else "FAILED", result.seconds)
    if not result.success:
        failed = result.failures
        detail = "; ".join(f"{n['name']}: {n['status']} {n['message'] or ''}".strip() for n in failed[:5])
        if outcome.exception is not None:
            detail = f"{outcome.exception}; {detail}"
        raise DbtBuildError(f"dbt build failed ({len(failed)} nodes): {detail}", result)
    return result


def _nodes(run_result: Any) -> list[dict[str, Any]]:
    nodes = []
    for node_result in getattr(run_result, "results", None) or []:
        node = node_result.node
        nodes.append({
            "name": node.name,
            "resource_type": str(node.resource_type),
            "status": str(node_result.status),
            "seconds": round(float(node_result.execution_time or 0), 3),
            "failures": node_result.failures,
            "message": node_result.message,
        })
    return nodes
