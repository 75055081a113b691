"""Airflow's local settings for the local stacks (`make run`, the tests' stacks): devstack copies
this file to $AIRFLOW_HOME/config/, where every Airflow process imports it when it starts.

The scheduler (LocalExecutor) and the Celery workers fork a process for each task, and a forked
process starts with the modules its parent holds. Importing here the third-party libraries the
tasks import (the PostgreSQL driver, boto3 and botocore, requests) spares every task their import,
measured in README « Démarrage rapide ». Libraries of the environment only, never the `qfdmo` package: it comes
with the DAGs, and a sync can replace it while the scheduler runs, when a copy loaded at start would
be the old one.
"""

from __future__ import annotations

import sys

# `airflow <command>` of the processes that fork the tasks.
_TASK_PARENTS = (("scheduler",), ("celery", "worker"))


def _preload_task_libraries() -> None:
    command = tuple(sys.argv[1:3])
    if not any(command[: len(parent)] == parent for parent in _TASK_PARENTS):
        return
    import boto3  # noqa: F401
    import botocore.session  # noqa: F401
    import psycopg  # noqa: F401
    import requests  # noqa: F401


_preload_task_libraries()
