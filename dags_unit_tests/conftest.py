"""Shared fixtures: throwaway versions of the services the platform uses, started by the tests.

Each test is marked by kind from the fixtures it uses: `e2e` (the Airflow stack), `integration`
(PostgreSQL, S3), `unit` (none of them: `pytest -m unit`, `make test-fast`).

- `postgres` (session): a private PostgreSQL 15 + PostGIS server on a free port (fsync off).
- `carte_dsn` (function): DSN of a fresh carte database, schema + reference data applied: a copy of
  `carte_template` (session), migrated once.
- `s3_server` (session): moto's S3 server on a free loopback port, platform buckets created.
- `airflow_stack` (session): Airflow 3 (api-server, scheduler, dag-processor, triggerer) on the same
  PostgreSQL and S3, started on first use, DAGs from a copy of dags/ (tests may add files to it).
- `celery_stack`: a second, separate stack with QFDMO_EXECUTOR=celery — Redis broker, two Celery
  workers as two "machines" (own data dirs, own hostnames) —, one per session
  (`celery_stack_session`), handed to each test with its broker and both workers up; helpers in
  celery_bed.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.config import DAGS_BUCKET, LOGS_BUCKET, REPO_ROOT, UI_PASSWORD, UI_USER, StackConfig
from devstack.stack import Stack, migrate_carte_db

_database_numbers = itertools.count()

# A test's kind follows from the services it asks for (directly or through another fixture):
# `make test-fast` runs the unit tests only, with no service started.
_CELERY_FIXTURES = frozenset({"celery_stack", "celery_stack_session"})
_E2E_FIXTURES = frozenset({"airflow_stack"}) | _CELERY_FIXTURES
_INTEGRATION_FIXTURES = frozenset({"test_stack", "postgres", "carte_dsn", "s3_server"})


# Under pytest-xdist (`make test`: `-n 2 --dist loadgroup`) each worker is its own session with its own
# throwaway services, started on first use. The tests on a stack form a group that xdist keeps on one
# worker: the LocalExecutor stack's, and the Celery stack's. One Airflow group on one worker while the
# other runs the Celery group and the plain tests is the fastest split measured: two LocalExecutor
# stacks side by side (the group cut in two halves) made every e2e test slower on 2 cores, 9 min 58 s
# against 8 min 18 s for the whole suite.
AIRFLOW_GROUP = "airflow_stack"
CELERY_GROUP = "celery_stack"


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped by SIGTERM (a CI timeout, `kill`) tears its fixtures down like Ctrl-C does, so the
    # throwaway stacks' servers do not outlive it.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _CELERY_FIXTURES:
            item.add_marker(pytest.mark.xdist_group(CELERY_GROUP))
        elif "airflow_stack" in fixtures:
            item.add_marker(pytest.mark.xdist_group(AIRFLOW_GROUP))
        if any(item.get_closest_marker(name) for name in ("unit", "integration", "e2e")):
            continue  # a test that starts services itself says so
        if fixtures & _E2E_FIXTURES:
            item.add_marker(pytest.mark.e2e)
        elif fixtures & _INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
        else:
            item.add_marker(pytest.mark.unit)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under `--dist loadgroup`, each xdist worker must have tagged its grouped tests (node id
    suffix `@group`), or xdist spreads a group over both workers and each starts its own Airflow:
    pytest 9.2 silently broke that (pytest-xdist#1386)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        marker = item.get_closest_marker("xdist_group")
        if marker is not None and not item.nodeid.endswith(f"@{marker.args[0]}"):
            raise pytest.UsageError(
                f"--dist loadgroup did not group {item.nodeid} (pytest/pytest-xdist versions that do not "
                "work together, see dev-requirements.in)")


# The stacks this session started, for the hooks below: the LocalExecutor one (Airflow stopped when
# no test needs it, started again when one does) and the Celery one (stopped once its group is done).
_session_stacks: dict[str, Stack] = {}


def _stack_kind(item: pytest.Item | None) -> str | None:
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & _CELERY_FIXTURES:
        return "celery"
    return "airflow" if "airflow_stack" in fixtures else None


def pytest_runtest_setup(item: pytest.Item) -> None:
    stack = _session_stacks.get("airflow")
    if _stack_kind(item) == "airflow" and stack is not None and not stack.with_airflow:
        stack.start_airflow()  # stopped after an earlier group of Airflow tests


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """A stack whose tests are done (the next test on this worker does not use it) stops at once:
    an idle Airflow (scheduler loops, api-server, dag-processor, triggerer) costs a quarter of a
    core, and xdist runs the groups one after the other on a worker, the other tests after them."""
    kind = _stack_kind(item)
    if kind is None or _stack_kind(nextitem) == kind:
        return
    if kind == "airflow" and (stack := _session_stacks.get("airflow")) is not None and stack.with_airflow:
        stack.stop_airflow()
    elif kind == "celery" and (stack := _session_stacks.pop("celery", None)) is not None:
        _discard(stack)


def _discard(stack: Stack) -> None:
    """Throwaway: SIGKILL every process tree (newest first) rather than wait for graceful shutdowns."""
    for child in reversed(stack.group.children[:]):
        stack.group.kill(child)
    stack.stop()
    shutil.rmtree(stack.config.state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def test_stack() -> Stack:
    config = StackConfig.throwaway("qfdmo-test-stack-")
    state_dir = config.state_dir
    stack = Stack(config, with_airflow=False)
    stack.start()
    _session_stacks["airflow"] = stack
    yield stack
    _session_stacks.pop("airflow", None)
    stack.stop()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(test_stack):
    return test_stack.postgres


@pytest.fixture(scope="session")
def carte_template(postgres) -> str:
    """A migrated carte database (PostGIS, the webapp's tables, reference data) that the tests'
    carte databases copy: `CREATE DATABASE … TEMPLATE` takes a quarter of creating PostGIS and
    migrating (README « Démarrage rapide »)."""
    name = f"carte_template_{os.getpid()}"
    postgres.create_database(name, postgis=True)
    migrate_carte_db(postgres.dsn(name))
    postgres.make_template(name)
    return name


@pytest.fixture
def carte_dsn(postgres, carte_template) -> str:
    name = f"carte_test_{os.getpid()}_{next(_database_numbers)}"
    postgres.create_database(name, template=carte_template)
    yield postgres.dsn(name)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def s3_server(test_stack):
    return test_stack.s3


@dataclass
class AirflowStack:
    """Handle on the test session's running Airflow, for end-to-end tests."""

    stack: Stack

    @property
    def config(self) -> StackConfig:
        return self.stack.config

    @property
    def api_url(self) -> str:
        return self.config.api_url

    @property
    def carte_dsn(self) -> str:
        """The carte database the stack's `qfdmo_django_db` connection points to."""
        return self.config.dsn("qfdmo")

    @property
    def s3_endpoint_url(self) -> str:
        return self.config.s3_endpoint_url

    logs_bucket = LOGS_BUCKET
    dags_bucket = DAGS_BUCKET

    @property
    def dags_folder(self) -> Path:
        return self.config.dags_folder

    @property
    def env(self) -> dict[str, str]:
        return self.config.airflow_env()

    def airflow(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
                check: bool = False) -> subprocess.CompletedProcess:
        """Runs `bin/airflow ARGS` against this stack; `env` entries override the stack's."""
        extra = dict(env or {})
        process_env = {**os.environ, **extra, "QFDMO_STACK_DIR": str(self.config.state_dir),
                       "QFDMO_OVERRIDE_ENV": ",".join(extra)}
        result = subprocess.run([str(REPO_ROOT / "bin" / "airflow"), *args], env=process_env,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"bin/airflow {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def airflow_json(self, *args: str, env: dict[str, str] | None = None, check: bool = True):
        """Runs a CLI command with `-o json` and decodes its output: stdout must be JSON alone
        (`bin/airflow … -o json | jq` works); a command that printed nothing gives []."""
        result = self.airflow(*args, "-o", "json", env=env, check=check)
        return json.loads(result.stdout) if result.stdout.strip() else []

    def token(self) -> str:
        request = urllib.request.Request(
            f"{self.api_url}/auth/token",
            data=json.dumps({"username": UI_USER, "password": UI_PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access_token"]

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Calls the REST API (/api/v2/...); returns the decoded JSON (stack_runs.api: one token per
        stack, a busy api-server retried)."""
        from stack_runs import api

        return api(self, method, path.removeprefix("/api/v2"), body)


@contextlib.contextmanager
def _starting_alone(tmp_path_factory: pytest.TempPathFactory, defer: float = 0.0) -> Iterator[None]:
    """One stack starts at a time across the xdist workers (a lock in the run's shared temp
    folder): two Airflows starting side by side on two cores each take about twice as long as one
    alone. The LocalExecutor stack's group is the suite's critical path, so the Celery stack lets it
    go first (`defer`)."""
    time.sleep(defer)
    lock = tmp_path_factory.getbasetemp().parent / "qfdmo-stack-start.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def airflow_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AirflowStack:
    with _starting_alone(tmp_path_factory):
        test_stack = request.getfixturevalue("test_stack")
        if not test_stack.with_airflow:
            test_stack.start_airflow()
    return AirflowStack(test_stack)


@pytest.fixture(scope="session")
def celery_stack_session(tmp_path_factory: pytest.TempPathFactory):
    from celery_bed import CeleryStack, start_celery_stack

    with _starting_alone(tmp_path_factory, defer=3.0):
        stack, state_dir = start_celery_stack()
    print(f"celery_stack started: {stack.timings}")
    _session_stacks["celery"] = stack
    yield CeleryStack(stack)
    if _session_stacks.pop("celery", None) is not None:  # not already discarded after its group
        _discard(stack)


@pytest.fixture
def celery_stack(celery_stack_session):
    celery_stack_session.restore()
    return celery_stack_session
