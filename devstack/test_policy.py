"""Airflow cluster policy of throwaway Celery stacks (tests): a task's retry comes after at most
TEST_RETRY_DELAY instead of the DAG's retry_delay (minutes), so a test that kills a worker sees the
retry without waiting. Loaded through $AIRFLOW_HOME/config/airflow_local_settings.py, written by the
stack; never in preprod/prod."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

TEST_RETRY_DELAY = timedelta(seconds=1)


def task_policy(task: Any) -> None:
    if task.retries and task.retry_delay > TEST_RETRY_DELAY:
        task.retry_delay = TEST_RETRY_DELAY
