"""The Celery test bed: one local stack with QFDMO_EXECUTOR=celery per test session (fixture
`celery_stack` in conftest.py), a real Redis broker and two Celery workers that behave as two machines
(each its own QFDMO_DATA_DIR and TMPDIR, its own hostname in the task instances).

Tests block a task at a point they choose with a PostgreSQL advisory lock held by the test
(`hold_lock`, `wait_for_lock_waiter`): no sleep, no timing assumption."""

from __future__ import annotations

import contextlib
import json
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from conftest import AirflowStack

from devstack.config import StackConfig
from devstack.processes import wait_until
from devstack.stack import Stack

FINISHED_RUN_STATES = ("success", "failed")


@dataclass(frozen=True)
class TaskRow:
    """One task instance (or one earlier try of it, from task_instance_history)."""

    task_id: str
    map_index: int
    try_number: int
    state: str | None
    hostname: str | None

    @property
    def worker(self) -> str | None:
        """`worker1` for hostname `worker1.<machine>` (devstack.worker_identity)."""
        return self.hostname.split(".")[0] if self.hostname else None


class CeleryStack(AirflowStack):
    """Handle on the session's Celery stack: runs, task instances, workers, broker, logs."""

    @property
    def airflow_dsn(self) -> str:
        return self.config.dsn("airflow")

    def worker_names(self) -> list[str]:
        return self.stack.worker_names()

    def worker_data_dir(self, name: str) -> Path:
        """The QFDMO_DATA_DIR of one worker (its own "machine")."""
        return self.config.worker_dir(name) / "data"

    # --- DAGs and runs ---------------------------------------------------------------------------

    def add_dag(self, file_name: str, source: str, dag_id: str, timeout: float = 120) -> None:
        """Write a DAG file into the stack's DAGs folder, wait until it is parsed, unpause it."""
        (self.dags_folder / file_name).write_text(source)
        self.wait_for_dag(dag_id, timeout)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the DAG is parsed, then unpause it."""
        def parsed() -> bool:
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
            except urllib.error.HTTPError as error:
                if error.code == 404:
                    return False
                raise
            return True

        wait_until(parsed, f"{dag_id} to be parsed", timeout, group=self.stack.group, interval=0.5)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Start a run now; returns its run_id."""
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        with psycopg.connect(self.airflow_dsn) as conn:
            row = conn.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s",
                               (dag_id, run_id)).fetchone()
        return row[0] if row else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Until the run ends; returns its final state (success or failed)."""
        return wait_until(lambda: (state := self.run_state(dag_id, run_id)) in FINISHED_RUN_STATES and state,
                          f"run {run_id} of {dag_id} to end", timeout, group=self.stack.group, interval=0.5)

    def task_instances(self, dag_id: str, run_id: str) -> list[TaskRow]:
        """The run's task instances (their latest try), with the hostname each ran on."""
        with psycopg.connect(self.airflow_dsn) as conn:
            rows = conn.execute(
                "SELECT task_id, map_index, try_number, state, hostname FROM task_instance"
                " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index", (dag_id, run_id)).fetchall()
        return [TaskRow(*row) for row in rows]

    def earlier_tries(self, dag_id: str, run_id: str) -> list[TaskRow]:
        """The tries before the latest one (Airflow keeps them in task_instance_history)."""
        with psycopg.connect(self.airflow_dsn) as conn:
            rows = conn.execute(
                "SELECT task_id, map_index, try_number, state, hostname FROM task_instance_history"
                " WHERE dag_id = %s AND run_id = %s ORDER BY task_id, map_index, try_number",
                (dag_id, run_id)).fetchall()
        return [TaskRow(*row) for row in rows]

    def wait_for_task_state(self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...],
                            timeout: float = 120) -> TaskRow:
        def reached() -> TaskRow | None:
            rows = self.task_instances(dag_id, run_id)
            found = next((row for row in rows if row.task_id == task_id and row.state in states), None)
            if found is None and self.run_state(dag_id, run_id) in FINISHED_RUN_STATES:
                raise AssertionError(f"run {run_id} of {dag_id} ended before {task_id} was "
                                     f"{'/'.join(states)}:\n{describe(rows)}")
            return found

        return wait_until(reached, f"{task_id} of {run_id} to be {'/'.join(states)}", timeout,
                          group=self.stack.group, interval=0.5)

    # --- Blocking a task where the test wants ----------------------------------------------------

    @contextlib.contextmanager
    def hold_lock(self, key: int) -> Iterator[psycopg.Connection]:
        """Hold advisory lock `key` on the carte database: a task calling pg_advisory_lock(key)
        waits there until the block ends (or `unlock`)."""
        with psycopg.connect(self.carte_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            yield conn

    @staticmethod
    def unlock(conn: psycopg.Connection, key: int) -> None:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def lock_waiters(self, key: int) -> list[int]:
        """Backend pids waiting for advisory lock `key` on the carte database."""
        with psycopg.connect(self.carte_dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND NOT l.granted AND l.objid = %s AND a.datname = current_database()",
                (key,)).fetchall()
        return [pid for (pid,) in rows]

    def wait_for_lock_waiter(self, key: int, timeout: float = 120) -> int:
        """Until a task waits for advisory lock `key`; returns the waiting backend's pid."""
        return wait_until(lambda: next(iter(self.lock_waiters(key)), None), f"a task to wait for lock {key}",
                          timeout, group=self.stack.group, interval=0.2)

    def table_lock_waiters(self, table: str) -> list[int]:
        """Backend pids waiting for a lock on `table` of the carte database (LOCK TABLE by the test)."""
        with psycopg.connect(self.carte_dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'relation' AND NOT granted"
                                " AND relation = %s::regclass", (table,)).fetchall()
        return [pid for (pid,) in rows]

    def waits_for_a_lock(self, pid: int) -> bool:
        with psycopg.connect(self.carte_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return bool(row) and row[0] == "Lock"

    def backend_alive(self, pid: int) -> bool:
        with psycopg.connect(self.carte_dsn, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] > 0

    # --- Workers, broker, logs -------------------------------------------------------------------

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and every process under it (its running tasks too)."""
        self.stack.kill_worker(name)

    def stop_worker(self, name: str) -> None:
        self.stack.stop_worker(name)

    def start_worker(self, name: str, wait: bool = True) -> None:
        """Start it again (same name, same data directory); wait until it answers a ping, unless
        told not to (the next test's `restore` waits)."""
        self.stack.start_worker(name, wait=wait)

    def restore(self) -> None:
        """Back to a full stack: the broker and both workers running and answering (what each test
        of `celery_stack` starts from, whatever the previous one stopped or killed)."""
        running = self.stack.running()
        if "broker" not in running:
            self.stack.start_broker()
        for name in self.worker_names():
            if name not in running:
                self.stack.start_worker(name, wait=False)
        self.stack.wait_for_workers(self.worker_names())

    def live_workers(self) -> list[str]:
        return self.stack.live_workers()

    def stop_broker(self) -> None:
        self.stack.stop_broker()

    def start_broker(self) -> None:
        self.stack.start_broker()

    def log_path(self, component: str) -> Path:
        return self.config.logs_dir / f"{component}.log"

    def log_size(self, component: str) -> int:
        """Where a component's log ends now: read from there with `log_since`."""
        path = self.log_path(component)
        return path.stat().st_size if path.exists() else 0

    def log_since(self, component: str, offset: int = 0) -> str:
        with self.log_path(component).open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def scheduler_log(self, offset: int = 0) -> str:
        return self.log_since("scheduler", offset)

    def wait_for_log(self, component: str, text: str, offset: int = 0, timeout: float = 120) -> str:
        """Until `text` appears in the component's log after `offset`; returns the log from there."""
        def logged() -> str | None:
            log = self.log_since(component, offset)
            return log if text in log else None

        return wait_until(logged, f"{text!r} in the {component} log", timeout, group=self.stack.group,
                          interval=0.5)


def start_celery_stack() -> tuple[Stack, Path]:
    """A throwaway Celery stack on free ports, DAGs from a copy of dags/ (tests may add files)."""
    config = StackConfig.throwaway("qfdmo-test-celery-", executor="celery")
    state_dir = config.state_dir
    stack = Stack(config)
    stack.start()
    return stack, state_dir


def describe(rows: list[TaskRow]) -> str:
    return json.dumps([row.__dict__ for row in rows], indent=1)
