"""The whole local platform: PostgreSQL + PostGIS, S3 (moto), Airflow 3 (api-server, scheduler,
dag-processor, triggerer). Used by `make run/up/down`, `bin/airflow` and the test fixtures."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from devstack import broker
from devstack.config import BUCKETS, CELERY_WORKERS, REPO_ROOT, UI_PASSWORD, UI_USER, VENV_BIN, StackConfig
from devstack.postgres import PostgresServer, provision
from devstack.processes import ProcessGroup, StackError, check_ports_free, http_get, wait_until
from devstack.s3 import S3Server

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HEALTH_KEYS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
# Copied to $AIRFLOW_HOME/config/ at each start (its docstring says why).
LOCAL_SETTINGS = Path(__file__).with_name("airflow_local_settings.py")


def migrate_carte_db(dsn: str) -> None:
    """Apply the carte schema and reference data (versioned SQL of qfdmo.carte_db)."""
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "qfdmo.carte_db", "migrate", "--dsn", dsn],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "dags")},
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise StackError(f"Carte schema migration failed:\n{result.stdout[-1500:]}{result.stderr[-2500:]}")


class Stack:
    def __init__(self, config: StackConfig, with_airflow: bool = True) -> None:
        self.config = config
        self.with_airflow = with_airflow
        self.group = ProcessGroup(config.logs_dir)
        self.postgres = PostgresServer(config.pg_dir, config.ports.postgres, ephemeral=config.ephemeral)
        self.s3 = S3Server(config.ports.s3)
        self.broker = broker.BrokerServer(config.broker_dir, config.ports.broker)
        self.timings: dict[str, float] = {}
        self._migration: subprocess.Popen | None = None  # `airflow db migrate`, while it runs

    @property
    def pgids_file(self) -> Path:
        return self.config.state_dir / "stack.pgids"

    def _record_children(self) -> None:
        self.pgids_file.write_text(" ".join(map(str, self.group.pgids())))

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 2)

    def start(self) -> None:
        """Start everything, or nothing: any failure stops what was already started."""
        ports = self.config.used_ports()
        if not self.with_airflow:
            ports = {k: v for k, v in ports.items() if k in ("QFDMO_POSTGRES_PORT", "QFDMO_S3_PORT")}
        check_ports_free(ports)
        provision()
        if self.config.celery and self.with_airflow:
            broker.provision()
        self.config.save()
        for directory in (self.config.data_dir, self.config.logs_dir, self.config.airflow_home):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start_storage()
            if self.with_airflow:
                self._start_airflow()
        except BaseException:
            self.stop()
            raise

    def start_airflow(self) -> None:
        """Add Airflow to a stack started without it (test fixtures start it on first use)."""
        check_ports_free({k: v for k, v in self.config.used_ports().items()
                          if k not in ("QFDMO_POSTGRES_PORT", "QFDMO_S3_PORT")})
        if self.config.celery:
            broker.provision()
        self.with_airflow = True
        self._start_airflow()

    def stop_airflow(self) -> None:
        """Stop Airflow (with the broker and workers of a Celery stack), keeping PostgreSQL and S3 and
        every state: a test session done with its Airflow tests stops paying for idle schedulers;
        `start_airflow` brings it back on the same ports and databases."""
        names = {*AIRFLOW_COMPONENTS, *self.worker_names(), "broker"}
        for child in [c for c in reversed(self.group.children) if c.name in names]:
            self.group.kill(child)
        self.with_airflow = False
        self._record_children()

    def _start_storage(self) -> None:
        started = time.monotonic()
        self.postgres.start(self.group)
        self._record_children()
        self.postgres.create_database("airflow")
        self.postgres.create_database("qfdmo", postgis=True)
        if self.with_airflow:
            self._begin_airflow_migration()  # meanwhile: the carte schema, S3
        migrate_carte_db(self.config.dsn("qfdmo"))
        self._timed("postgres", started)

        started = time.monotonic()
        self.s3.start(self.group)
        self._record_children()
        self.s3.create_buckets(BUCKETS)
        self._timed("s3", started)

    def _start_airflow(self) -> None:
        if self.config.celery:
            started = time.monotonic()
            self.broker.start(self.group)
            self._record_children()
            self._timed("broker", started)
        local_settings = self.config.airflow_home / "config" / "airflow_local_settings.py"
        local_settings.parent.mkdir(parents=True, exist_ok=True)
        settings = LOCAL_SETTINGS.read_text()
        if self.config.celery and self.config.ephemeral:
            # Tests kill workers: the retries come at once (devstack/test_policy.py).
            settings += "\nfrom devstack.test_policy import task_policy  # noqa: F401\n"
        local_settings.write_text(settings)
        started = time.monotonic()
        env = self.config.airflow_env()
        self._finish_airflow_migration()
        self._timed("airflow_db_migrate", started)

        started = time.monotonic()
        for component in AIRFLOW_COMPONENTS:
            args = ["airflow", component]
            if component == "api-server":
                args += ["--host", "127.0.0.1", "--port", str(self.config.ports.api)]
            if component == "triggerer":
                # Its log server only matters for deferred tasks' live logs; saves ~150 MB idle.
                args.append("--skip-serve-logs")
            self.group.start(component, args, env=env, cwd=self.config.airflow_home)
        for name in self.worker_names():
            self._spawn_worker(name, env)
        self._record_children()
        wait_until(self.healthy, "every Airflow component to report healthy", timeout=120, group=self.group)
        self.wait_for_workers(self.worker_names())
        self._timed("airflow_healthy", started)

    @property
    def _migration_log(self) -> Path:
        return self.config.logs_dir / "airflow-db-migrate.log"

    def _begin_airflow_migration(self) -> None:
        with self._migration_log.open("wb") as log:
            self._migration = subprocess.Popen(
                ["airflow", "db", "migrate"], env={**os.environ, **self.config.airflow_env()},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _finish_airflow_migration(self) -> None:
        if self._migration is None:
            self._begin_airflow_migration()
        assert self._migration is not None
        returncode = self._migration.wait()
        self._migration = None
        if returncode != 0:
            output = self._migration_log.read_text(errors="replace")
            raise StackError(f"`airflow db migrate` failed:\n{output[-4000:]}")

    def worker_names(self) -> list[str]:
        return [f"worker{n}" for n in range(1, CELERY_WORKERS + 1)] if self.config.celery else []

    def _spawn_worker(self, name: str, env: dict[str, str]) -> None:
        # Each worker has a disk of its own (data, scratch), as on separate machines.
        for folder in ("data", "tmp"):
            (self.config.worker_dir(name) / folder).mkdir(parents=True, exist_ok=True)
        # Task logs go to S3 at the end of each task, so the workers need no log server
        # (two on one machine would otherwise fight over its port).
        self.group.start(name, ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h",
                                "--skip-serve-logs"], env={**env, **self.config.worker_env(name)},
                         cwd=self.config.airflow_home)

    def wait_for_workers(self, names: list[str], timeout: float = 120) -> None:
        """Until each of these Celery workers answers a ping."""
        expected = {f"{name}@{os.uname().nodename}" for name in names}
        wait_until(lambda: expected <= set(self.live_workers()),
                   f"Celery workers {', '.join(names)} to answer a ping", timeout=timeout, group=self.group)

    def start_worker(self, name: str, wait: bool = True) -> None:
        """(Re)start one Celery worker; wait until it answers, unless told not to."""
        self._spawn_worker(name, self.config.airflow_env())
        self._record_children()
        if wait:
            self.wait_for_workers([name])

    def running(self) -> set[str]:
        """Names of the stack's processes still running."""
        return {child.name for child in self.group.children if child.process.poll() is None}

    def kill_worker(self, name: str) -> None:
        """SIGKILL a Celery worker and all its processes (its running tasks too): a machine lost."""
        self.group.kill(self.group.child(name))
        self._record_children()

    def stop_worker(self, name: str) -> None:
        """Celery's warm shutdown (SIGTERM): it takes no new task and waits for its running ones."""
        self.group.terminate(self.group.child(name))
        self._record_children()

    def stop_broker(self) -> None:
        self.group.terminate(self.group.child("broker"))
        self._record_children()

    def start_broker(self) -> None:
        """(Re)start the broker, empty (in memory only), on the same port."""
        self.broker.start(self.group)
        self._record_children()

    def live_workers(self) -> list[str]:
        """Names of the Celery workers answering a broadcast ping (empty without Celery)."""
        if not self.config.celery:
            return []
        from celery import Celery  # lazy: only Celery stacks need it

        app = Celery(broker=self.config.broker_url)
        try:
            replies = app.control.ping(timeout=1.0) or []
        except Exception:  # broker down or restarting (socket, kombu or redis errors): no answer yet
            return []
        finally:
            app.close()
        return sorted(name for reply in replies for name in reply)

    def health(self) -> dict:
        try:
            status, body = http_get(f"{self.config.api_url}/api/v2/monitor/health")
        except OSError:
            return {}
        return json.loads(body) if status == 200 else {}

    def healthy(self) -> bool:
        health = self.health()
        return bool(health) and all(
            (health.get(key) or {}).get("status") == "healthy" for key in HEALTH_KEYS
        )

    def stop(self) -> None:
        if self._migration is not None:  # a start that failed while it ran
            self._migration.kill()
            self._migration.wait()
            self._migration = None
        self.group.stop()
        self.pgids_file.unlink(missing_ok=True)

    def banner(self) -> str:
        c = self.config
        lines = [
            "",
            "Plateforme QFDMO démarrée.",
            f"  Airflow (UI + API) : {c.api_url}   utilisateur {UI_USER} / mot de passe {UI_PASSWORD}",
            f"  PostgreSQL         : 127.0.0.1:{c.ports.postgres} (bases airflow et qfdmo, utilisateur postgres)",
            f"  S3 (moto)          : {c.s3_endpoint_url} (buckets {', '.join(BUCKETS)})",
            f"  Exécuteur          : {c.executor}"
            + (f" (broker {c.broker_url}, workers {', '.join(self.worker_names())})" if c.celery else ""),
            f"  DAGs               : {c.dags_folder}",
            f"  Données et journaux: {c.state_dir}",
            "  CLI Airflow        : bin/airflow …",
        ]
        if self.timings:
            lines.append(f"  Démarrage          : {self.timings}")
        return "\n".join(lines) + "\n"
