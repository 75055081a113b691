"""The Celery configuration of the platform's workers and scheduler:
AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=qfdmo.airflow.celery_config.CELERY_CONFIG.

Airflow's own configuration, unchanged (built from the [celery] settings), plus one worker hook:
Celery's prefork pool marks its processes daemonic and Airflow forks each task from one of them, so a
task that starts processes (the parallel normalise) would fail with "daemonic processes are not
allowed to have children". `airflow celery worker` imports this module before it forks its pool
(the setting names it), which connects the hook to each pool process's start.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_process_init

CELERY_CONFIG: dict[str, Any] = DEFAULT_CELERY_CONFIG


@worker_process_init.connect
def allow_task_subprocesses(**_: Any) -> None:
    """Clear the pool process's daemon flag: it only gates multiprocessing's check in that process
    and in the tasks forked from it; the worker still stops its pool processes itself."""
    multiprocessing.current_process()._config.pop("daemon", None)  # type: ignore[attr-defined]
