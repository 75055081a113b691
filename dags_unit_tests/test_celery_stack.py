"""The local stack with QFDMO_EXECUTOR=celery (`celery_stack`, one per session): a real Redis broker
and two Celery workers as two machines. Tasks of one run spread over both workers; a worker killed
mid-task loses nothing and applies nothing twice; a broker outage holds tasks back without failing
them.
The executor choice itself is unit-tested on StackConfig.

The test DAGs block where the test wants with PostgreSQL advisory locks the test holds (no sleep)."""

from __future__ import annotations

import os

import psycopg
import pytest
from celery_bed import describe
from fakes import feed_server  # noqa: F401  (fixture)

from devstack.config import CELERY_EXECUTOR, EXECUTORS, StackConfig
from devstack.processes import wait_until

# Airflow's CeleryExecutor's line when a publish fails (its CELERY_SEND_ERR_MSG_HEADER).
CELERY_SEND_ERR_MSG_HEADER = "Error sending Celery workload"

BARRIER_LOCK, BROKER_LOCK = 7301, 7303

# One file for the test DAGs: parsed once for the module.
TEST_DAGS = f'''
import os
from datetime import datetime

import psycopg
from airflow.sdk import dag, task

CARTE_DSN = os.environ["AIRFLOW_CONN_QFDMO_DJANGO_DB"]
WORKER = os.environ.get("QFDMO_WORKER_NAME", "")


def wait_for_the_test(lock):
    """Block until the test releases its advisory lock (shared: all waiters go on together)."""
    with psycopg.connect(CARTE_DSN, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock_shared(%s)", (lock,))


@dag(dag_id="celery_barrier", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def celery_barrier():
    @task
    def meet(n: int) -> str:
        wait_for_the_test({BARRIER_LOCK})
        return WORKER

    meet.expand(n=[1, 2, 3, 4])


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
celery_broker_down()
'''


def test_executor_is_chosen_by_configuration(tmp_path):
    local = StackConfig(state_dir=tmp_path)
    assert local.airflow_env()["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert "QFDMO_BROKER_PORT" not in local.used_ports()
    celery = StackConfig(state_dir=tmp_path, executor="celery")
    env = celery.airflow_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == EXECUTORS["celery"] == CELERY_EXECUTOR
    assert str(celery.dags_folder) in env["PYTHONPATH"].split(os.pathsep), "the executor's module"
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
def test_dags(celery_stack_session) -> None:
    (celery_stack_session.dags_folder / "celery_test_dags.py").write_text(TEST_DAGS)
    for dag_id in ("celery_barrier", "celery_broker_down"):
        celery_stack_session.wait_for_dag(dag_id)


def test_tasks_of_one_run_land_on_both_celery_workers(celery_stack, test_dags):
    stack = celery_stack
    assert stack.live_workers() == [f"worker{n}@{os.uname().nodename}" for n in (1, 2)]
    with stack.hold_lock(BARRIER_LOCK):
        run_id = stack.trigger("celery_barrier")
        # Three tasks waiting at once: more than one worker's two slots (parallelism is 3).
        wait_until(lambda: len(stack.lock_waiters(BARRIER_LOCK)) >= 3, "3 tasks at the barrier", 180,
                   interval=0.2)
    assert stack.wait_for_run("celery_barrier", run_id) == "success"
    rows = stack.task_instances("celery_barrier", run_id)
    assert {row.state for row in rows} == {"success"}, describe(rows)
    assert {row.worker for row in rows} == {"worker1", "worker2"}, describe(rows)
    # Two machines: each worker writes under its own data directory and scratch.
    assert stack.worker_data_dir("worker1") != stack.worker_data_dir("worker2")


def test_the_broker_down_holds_tasks_back_until_it_is_back(celery_stack, test_dags):
    from qfdmo.airflow.celery_executor import BROKER_BACK, BROKER_DOWN  # not at collection: imports Celery

    stack = celery_stack
    with stack.hold_lock(BROKER_LOCK):
        run_id = stack.trigger("celery_broker_down")
        stack.wait_for_lock_waiter(BROKER_LOCK)
        offset = stack.log_size("scheduler")
        stack.stop_broker()
    # `before` ends while the broker is down: the scheduler cannot hand `after` to a worker.
    stack.wait_for_task_state("celery_broker_down", run_id, "before", ("success",))
    try:
        log = stack.wait_for_log("scheduler", BROKER_DOWN, offset)
        assert "1 task(s) wait in the scheduler" in log, log[-3000:]
        # Airflow's own CeleryExecutor fails the task at this very loop ("Error sending Celery workload").
        assert CELERY_SEND_ERR_MSG_HEADER not in log, log[-3000:]
        (after,) = [row for row in stack.task_instances("celery_broker_down", run_id) if row.task_id == "after"]
        assert (after.state, after.try_number) == ("queued", 1), describe([after])
    finally:
        stack.start_broker()
    assert stack.wait_for_run("celery_broker_down", run_id, timeout=180) == "success"
    assert BROKER_BACK in stack.scheduler_log(offset)
    rows = stack.task_instances("celery_broker_down", run_id)
    assert [(row.task_id, row.state, row.try_number) for row in rows] == [
        ("after", "success", 1), ("before", "success", 1)], describe(rows)


def test_a_worker_killed_during_a_source_apply(celery_stack, feed_server):  # noqa: F811
    """The source DAG's apply killed mid-transaction (acteurs written, propositions blocked by the
    test's table lock): nothing of it stays, the retry on the other worker applies the run once."""
    import threading

    from qfdmo.carte_db.run_tables import lock_key
    from qfdmo.sources import load_declarations

    stack = celery_stack
    declaration = load_declarations()["ocab"]
    dag_id, codes = declaration.dag_id, list(declaration.source_codes)
    stack.wait_for_dag(dag_id)
    # Until the run's files leave the local disk, its first tasks must share one machine: worker1.
    stack.kill_worker("worker2")
    conf = {"endpoint_url": feed_server.datafair_url("donnees-eo-ocab", size="3")}
    with psycopg.connect(stack.carte_dsn) as table_lock, psycopg.connect(stack.carte_dsn, autocommit=True) as gate:
        table_lock.execute("LOCK TABLE qfdmo_propositionservice IN SHARE MODE")  # writes wait, reads go on
        run_id = stack.trigger(dag_id, conf)
        stack.wait_for_task_state(dag_id, run_id, "stage_and_diff", ("running",), timeout=300)
        stack.start_worker("worker2", wait=False)  # boots meanwhile; the apply needs no file
        first = stack.wait_for_task_state(dag_id, run_id, "apply", ("running",), timeout=300)
        apply_backend = wait_until(lambda: next(iter(stack.table_lock_waiters("qfdmo_propositionservice")), None),
                                   "the apply to wait for the propositions table", 120, interval=0.2)
        with psycopg.connect(stack.carte_dsn) as peek:  # the apply's acteurs are written, not committed
            assert peek.execute("SELECT count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
                                " WHERE s.code = ANY(%s)", (codes,)).fetchone()[0] == 0
        victim = first.worker
        survivor = ({"worker1", "worker2"} - {victim}).pop()
        stack.stack.wait_for_workers([survivor])
        stack.kill_worker(victim)
        # The test queues for the source's apply lock behind the killed transaction, ahead of any retry.
        gate_thread = threading.Thread(target=gate.execute, args=("SELECT pg_advisory_lock(%s)", (lock_key(codes),)))
        gate_thread.start()
        wait_until(lambda: stack.waits_for_a_lock(gate.info.backend_pid), "the test to queue for the apply lock",
                   30, interval=0.1)
        table_lock.rollback()  # the killed apply goes on, cannot receive its COMMIT: rolled back
        gate_thread.join(60)
        assert not gate_thread.is_alive() and not stack.backend_alive(apply_backend)
        with psycopg.connect(stack.carte_dsn) as conn:
            acteurs = conn.execute("SELECT count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
                                   " WHERE s.code = ANY(%s)", (codes,)).fetchone()[0]
            applied = conn.execute("SELECT count(*) FROM qfdmo_platform.applied_feed WHERE source = %s",
                                   (declaration.code,)).fetchone()[0]
        assert (acteurs, applied) == (0, 0), "the killed apply left rows behind"
        gate.execute("SELECT pg_advisory_unlock(%s)", (lock_key(codes),))
    assert stack.wait_for_run(dag_id, run_id, timeout=240) == "success"
    rows = {row.task_id: row for row in stack.task_instances(dag_id, run_id)}
    lost = [row for row in stack.earlier_tries(dag_id, run_id) if row.task_id == "apply"]
    assert [(row.try_number, row.worker, row.state) for row in lost] == [(1, victim, "failed")], describe(lost)
    assert (rows["apply"].try_number, rows["apply"].worker, rows["apply"].state) == (2, survivor, "success")
    assert {rows[t].worker for t in ("download", "normalise", "stage_and_diff")} == {"worker1"}
    with psycopg.connect(stack.carte_dsn) as conn:
        acteurs = conn.execute("SELECT count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
                               " WHERE s.code = ANY(%s)", (codes,)).fetchone()[0]
        applied = conn.execute("SELECT count(*) FROM qfdmo_platform.applied_feed WHERE source = %s",
                               (declaration.code,)).fetchone()[0]
    assert (acteurs, applied) == (9, 1), describe(list(rows.values()))
