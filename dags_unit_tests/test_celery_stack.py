"""The local stack with QFDMO_EXECUTOR=celery (`celery_stack`, one per session): a real Redis broker
and two Celery workers as two machines. Tasks of one run spread over both workers; a worker killed
mid-task loses nothing and applies nothing twice; a broker outage delays tasks without failing them.
The executor choice itself is unit-tested on StackConfig.

The test DAGs block where the test wants with PostgreSQL advisory locks the test holds (no sleep)."""

from __future__ import annotations

import pytest
from celery_bed import describe

from devstack.config import EXECUTORS, StackConfig
from devstack.processes import wait_until

BARRIER_LOCK, KILL_LOCK, BROKER_LOCK = 7301, 7302, 7303

# One file for the three DAGs: parsed once for the module.
TEST_DAGS = f'''
import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

CARTE_DSN = os.environ["AIRFLOW_CONN_QFDMO_DJANGO_DB"]
WORKER = os.environ.get("QFDMO_WORKER_NAME", "")


def wait_for_the_test(lock, conn=None):
    """Block until the test releases its advisory lock (shared: all waiters go on together)."""
    if conn is not None:
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (lock,))
        return
    with psycopg.connect(CARTE_DSN, autocommit=True) as own:
        own.execute("SELECT pg_advisory_lock_shared(%s)", (lock,))


@dag(dag_id="celery_barrier", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def celery_barrier():
    @task
    def meet(n: int) -> str:
        wait_for_the_test({BARRIER_LOCK})
        return WORKER

    meet.expand(n=[1, 2, 3, 4])


@dag(dag_id="celery_worker_lost", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def celery_worker_lost():
    @task(retries=1, retry_delay=timedelta(seconds=1))
    def apply_once(**context) -> None:
        # Like a source's apply: one transaction, committed only when the block ends.
        with psycopg.connect(CARTE_DSN) as conn:
            conn.execute("INSERT INTO celery_test_applied (run_id, worker) VALUES (%s, %s)",
                         (context["run_id"], WORKER))
            wait_for_the_test({KILL_LOCK}, conn)

    apply_once()


@dag(dag_id="celery_broker_down", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def celery_broker_down():
    @task
    def before() -> None:
        wait_for_the_test({BROKER_LOCK})

    @task
    def after() -> str:
        return WORKER

    before() >> after()


celery_barrier()
celery_worker_lost()
celery_broker_down()
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


def test_each_worker_is_a_machine_of_its_own(tmp_path):
    config = StackConfig(state_dir=tmp_path, executor="celery")
    worker1, worker2 = config.worker_env("worker1"), config.worker_env("worker2")
    for name in ("QFDMO_DATA_DIR", "TMPDIR", "QFDMO_WORKER_NAME"):
        assert worker1[name] != worker2[name] != config.airflow_env().get(name)
    assert worker1["QFDMO_DATA_DIR"].startswith(str(config.worker_dir("worker1")))


@pytest.fixture(scope="module")
def test_dags(celery_stack):
    (celery_stack.dags_folder / "celery_test_dags.py").write_text(TEST_DAGS)
    for dag_id in ("celery_barrier", "celery_worker_lost", "celery_broker_down"):
        celery_stack.wait_for_dag(dag_id)
    return celery_stack


def test_tasks_of_one_run_land_on_both_celery_workers(test_dags):
    stack = test_dags
    assert stack.live_workers() == [f"worker{n}@{__import__('os').uname().nodename}" for n in (1, 2)]
    with stack.hold_lock(BARRIER_LOCK):
        run_id = stack.trigger("celery_barrier")
        # Three tasks waiting at once: more than one worker's two slots (parallelism is 3).
        wait_until(lambda: len(stack.lock_waiters(BARRIER_LOCK)) >= 3, "3 tasks at the barrier", 180,
                   interval=0.2)
    assert stack.wait_for_run("celery_barrier", run_id) == "success"
    rows = stack.task_instances("celery_barrier", run_id)
    assert {row.state for row in rows} == {"success"}, describe(rows)
    assert {row.worker for row in rows} == {"worker1", "worker2"}, describe(rows)
