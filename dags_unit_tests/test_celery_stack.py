"""The local stack with QFDMO_EXECUTOR=celery: a real Redis broker and two Celery workers started
from the scheduler's environment, tasks of one run spread over both (what `make up` does with
QFDMO_EXECUTOR=celery). The executor choice itself is unit-tested on StackConfig."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from devstack.config import EXECUTORS, REPO_ROOT, Ports, StackConfig
from devstack.processes import free_port, processes_in_group, wait_until
from devstack.stack import Stack

# Each task waits until three tasks have started: more than one worker's two slots, so the run can
# only finish if both workers take tasks (no timing assumption: a barrier on a shared folder).
BARRIER_DAG = '''
from datetime import datetime
from pathlib import Path
import os, time
from airflow.sdk import dag, task

BARRIER = Path(os.environ["QFDMO_TEST_BARRIER"])

@dag(dag_id="celery_barrier", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def celery_barrier():
    @task
    def meet(n: int) -> None:
        (BARRIER / str(n)).touch()
        deadline = time.monotonic() + 300
        while len(list(BARRIER.iterdir())) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(BARRIER.iterdir())) >= 3

    meet.expand(n=[1, 2, 3, 4])

celery_barrier()
'''


def test_executor_is_chosen_by_configuration(tmp_path):
    local = StackConfig(state_dir=tmp_path)
    assert local.airflow_env()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "QFDMO_BROKER_PORT" not in local.used_ports()
    celery = StackConfig(state_dir=tmp_path, executor="celery")
    env = celery.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == EXECUTORS["celery"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{celery.ports.broker}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert "QFDMO_BROKER_PORT" in celery.used_ports()
    with pytest.raises(ValueError, match="QFDMO_EXECUTOR='kubernetes'"):
        StackConfig(state_dir=tmp_path, executor="kubernetes")


@pytest.mark.e2e
def test_tasks_of_one_run_land_on_both_celery_workers():
    state_dir = Path(tempfile.mkdtemp(prefix="qfdmo-test-celery-"))
    barrier = state_dir / "barrier"
    barrier.mkdir()
    dags_folder = state_dir / "dags"
    dags_folder.mkdir()
    (dags_folder / "celery_barrier.py").write_text(BARRIER_DAG)
    config = StackConfig(state_dir=state_dir, ports=Ports(**{name: free_port() for name in Ports().__dict__}),
                         dags_folder=dags_folder, ephemeral=True, executor="celery")
    os.environ["QFDMO_TEST_BARRIER"] = str(barrier)  # inherited by the workers
    stack = Stack(config)
    try:
        stack.start()
        assert stack.live_workers() == [f"worker1@{os.uname().nodename}", f"worker2@{os.uname().nodename}"]
        cli = {**os.environ, "QFDMO_STACK_DIR": str(state_dir)}
        airflow = [str(REPO_ROOT / "bin" / "airflow")]
        wait_until(lambda: subprocess.run([*airflow, "dags", "unpause", "celery_barrier"], env=cli,
                                          capture_output=True).returncode == 0,
                   "celery_barrier to be parsed", 120, interval=2)
        subprocess.run([*airflow, "dags", "trigger", "celery_barrier"], env=cli, check=True, capture_output=True)

        def finished() -> list[tuple] | None:
            with psycopg.connect(config.dsn("airflow")) as conn:
                rows = conn.execute("SELECT state, hostname FROM task_instance WHERE dag_id = 'celery_barrier'"
                                    ).fetchall()
            return rows if len(rows) == 4 and all(state in ("success", "failed") for state, _ in rows) else None

        rows = wait_until(finished, "the 4 mapped tasks to finish", 300, interval=2)
        assert {state for state, _ in rows} == {"success"}, rows
        assert {hostname.split(".")[0] for _, hostname in rows} == {"worker1", "worker2"}, rows
    finally:
        os.environ.pop("QFDMO_TEST_BARRIER", None)
        stack.stop()
        assert not any(processes_in_group(pgid) for pgid in stack.group.pgids())
        shutil.rmtree(state_dir, ignore_errors=True)
