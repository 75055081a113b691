"""Mirror the environment's DAG bucket into the DAG folder every 5 minutes (preprod, prod).

The work is sync_dags.sh's (atomic switch, deploy manifest, local files kept); this file only
schedules it. In development the DAGs come from the working tree, so the task skips.
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

from airflow.sdk import dag, task

SYNC_SCRIPT_DEFAULT = "/opt/airflow/sync_dags.sh"
# ENVIRONMENT's vocabulary is qfdmo.settings.Environment's (unset = a developer's machine). Not
# imported from there: the image's copy of this file is never replaced by a sync, and it must run
# in a DAG folder holding nothing else (a first boot, a broken deploy). test_settings.py checks
# that these words are the same.
DEVELOPMENT_ENVIRONMENTS = ("", "development")
SYNCED_ENVIRONMENTS = ("preprod", "prod")


@dag(
    dag_id="download_dags_from_s3",
    dag_display_name="Téléchargement des DAGs depuis S3",
    description="Synchronise le bucket S3 des DAGs (Cellar) vers le dossier des DAGs, toutes les 5 minutes",
    schedule="*/5 * * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    default_args={
        "owner": "data-platform",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=5),
    },
    tags=["infra", "deploiement"],
)
def download_dags_from_s3() -> None:
    @task.bash(task_display_name="Synchroniser les DAGs (sync_dags.sh)")
    def sync_dags() -> str:
        # Decided at run time, not parse time: the same file ships to every environment.
        # Exactly the words, as sync_dags.sh and the entrypoints take them ("PROD" is refused there too).
        environment = os.environ.get("ENVIRONMENT", "")
        if environment in DEVELOPMENT_ENVIRONMENTS:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"ENVIRONMENT={environment or 'unset'}: DAGs come from the working tree")
        if environment not in SYNCED_ENVIRONMENTS:
            raise ValueError(f"ENVIRONMENT={environment!r} is unknown (expected development, preprod or prod)")
        # The trailing space stops Airflow from loading a command ending in ".sh" as a Jinja template file.
        return shlex.quote(os.environ.get("SYNC_DAGS_SCRIPT", SYNC_SCRIPT_DEFAULT)) + " "

    sync_dags()


download_dags_from_s3()
