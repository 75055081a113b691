"""The platform's CeleryExecutor (qfdmo.airflow.celery_executor): while the broker does not answer,
tasks stay queued in the scheduler with one clear log line, instead of failing. Unit level, no
broker: a closed loopback port stands for the broker down (the real outage is in test_celery_stack)."""

from __future__ import annotations

import pytest

from devstack.processes import free_port


@pytest.fixture
def executor(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CELERY__BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql://nobody@127.0.0.1:1/none")
    from qfdmo.airflow.celery_executor import BrokerAwareCeleryExecutor

    return BrokerAwareCeleryExecutor()


def test_tasks_wait_with_one_clear_line_while_the_broker_is_down(executor, monkeypatch, capsys):
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor
    from qfdmo.airflow import celery_executor

    sent: list = []
    monkeypatch.setattr(CeleryExecutor, "_send_workloads", lambda self, tuples: sent.extend(tuples))
    capsys.readouterr()
    workload = ("key", "workload", "default", None)
    executor._send_workloads([workload])
    executor._send_workloads([workload])  # the next scheduler loop: no second line within a minute
    assert sent == []
    # Airflow's logging (structlog) writes to stdout.
    lines = [line for line in capsys.readouterr().out.splitlines() if celery_executor.BROKER_DOWN in line]
    assert len(lines) == 1, lines
    assert "1 task(s) wait in the scheduler" in lines[0] and "redis://127.0.0.1:" in lines[0], lines[0]
    assert "Connection refused" in lines[0] or "Error 111" in lines[0], lines[0]

    monkeypatch.setattr(executor, "_broker_error", lambda: None)  # the broker is back
    executor._send_workloads([workload])
    assert sent == [workload]
    assert celery_executor.BROKER_BACK in capsys.readouterr().out


def test_nothing_to_send_asks_nothing(executor, monkeypatch):
    from airflow.providers.celery.executors.celery_executor import CeleryExecutor

    monkeypatch.setattr(CeleryExecutor, "_send_workloads", lambda self, tuples: None)
    monkeypatch.setattr(executor, "_broker_error", lambda: pytest.fail("no broker check without tasks"))
    executor._send_workloads([])
