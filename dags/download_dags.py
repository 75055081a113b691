"""Mirror the environment's DAG bucket into the DAG folder every 5 minutes (preprod, prod).

The work is sync_dags.sh's (atomic switch, deploy manifest, local files kept); this file only
schedules it. In development the DAGs come from the working tree, so the task skips.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta

from airflow.sdk import dag, task

# The image's copy of this file is never replaced by a sync, while qfdmo/ comes from the bucket:
# qfdmo.settings keeps `settings` and `Environment` for it (and says so).
from qfdmo.settings import settings


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
        # An unknown ENVIRONMENT raises SettingsError, naming the variable and the known words.
        current = settings()
        if not current.environment.syncs_dags_from_s3:
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException("ENVIRONMENT=development: DAGs come from the working tree")
        # The trailing space stops Airflow from loading a command ending in ".sh" as a Jinja template file.
        return shlex.quote(current.sync_dags_script) + " "

    sync_dags()


download_dags_from_s3()
