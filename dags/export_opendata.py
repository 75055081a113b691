"""`export_opendata`: the weekly open-data file « Longue vie aux objets — acteurs de l'économie
circulaire », published to the open-data bucket.

    build ─> export ─> check ─┬─────────────────────> publish ─> report
                              └─> request_approval ─┘

- `build`: `dbt build --select +opendata_acteur` (the model and everything it reads, with tests).
- `export`: COPY of the model (UTF-8, comma, header, the 44 columns in order, ordered by
  identifiant) on the task's scratch disk, streamed gzip-compressed to the run's data in S3
  (`s3runs`: `runs/export_opendata/<run_id>/acteurs.csv.gz`), so that `check` and `publish` may run
  on any machine; removed by `report` once the run is settled (a failed run's copy is kept
  QFDMO_FAILED_RUN_RETENTION_DAYS days, like a source run's data).
- `check`: header and column count of every row; fewer rows than `min_rows_share` of the file
  published last asks a person (Reject by default at the timeout: nothing is published).
- `publish`: through the `s3data` connection, to bucket `qfdmo-opendata`: a timestamped copy under
  `acteurs/archives/`, then `acteurs/acteurs.csv` (public-read) and `acteurs/acteurs.schema.json`
  (Table Schema); copies older than 30 days removed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, task
from qfdmo.airflow.source_tasks import DECISION_KEY, SourceApprovalOperator, carte_dsn, fail, run_data

BUILD, EXPORT, CHECK, APPROVAL, PUBLISH, REPORT = (
    "build", "export", "check", "request_approval", "publish", "report")
EXPORT_FILE = "acteurs.csv"  # in the run's data (S3)
S3_CONN_ID = "s3data"


def _s3_client() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=S3_CONN_ID).get_conn()


@dag(
    dag_id="export_opendata",
    dag_display_name="Open data · acteurs de l'économie circulaire",
    description="Weekly open-data CSV of the acteurs, checked then published to the open-data bucket",
    doc_md=__doc__,
    schedule=CronTriggerTimetable("0 1 * * 1", timezone="Europe/Paris"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["qfdmo", "carte", "opendata"],
    default_args={"owner": "qfdmo-data", "retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "bucket": Param("qfdmo-opendata", type="string", description="Open-data bucket."),
        "min_rows_share": Param(0.9, type="number", minimum=0, maximum=1,
                                description="Fewer rows than this share of the last export need an approval."),
        "approval_timeout": Param(86_400, type="integer", minimum=1,
                                  description="Seconds to wait for the approval; then nothing is published."),
    },
)
def export_opendata() -> None:
    @task(task_id=BUILD, retries=0)
    def build() -> dict[str, Any]:
        from qfdmo.carte import DbtBuildError
        from qfdmo.carte.dbt_runner import build as dbt_build
        from qfdmo.carte.steps import dbt_scratch

        try:
            return dbt_build(carte_dsn(), dbt_scratch(), select=["+opendata_acteur"]).summary()
        except DbtBuildError as exc:
            fail(str(exc))

    @task(task_id=EXPORT)
    def export(built: dict[str, Any], **context: Any) -> dict[str, Any]:
        import shutil

        from qfdmo.carte.opendata import export_csv
        from qfdmo.pipeline import scratch_dir

        started = datetime.now()
        data = run_data(context)
        with scratch_dir() as scratch:
            done = export_csv(carte_dsn(), scratch / EXPORT_FILE)
            with done.path.open("rb") as exported, data.writer(EXPORT_FILE) as upload:
                shutil.copyfileobj(exported, upload, 1 << 20)
        return {"location": f"{data.location}{EXPORT_FILE}", "rows": done.rows, "bytes": done.bytes,
                "seconds": (datetime.now() - started).total_seconds()}

    @task.branch(task_id=CHECK)
    def check(exported: dict[str, Any], **context: Any) -> str:
        from qfdmo.carte.opendata import OpenDataCheckError, check_csv, previous_rows
        from qfdmo.pipeline import scratch_dir

        with scratch_dir() as scratch:
            try:
                verdict = check_csv(run_data(context).local_copy(EXPORT_FILE, scratch),
                                    previous_rows(_s3_client(), context["params"]["bucket"]),
                                    float(context["params"]["min_rows_share"]))
            except OpenDataCheckError as exc:
                fail(str(exc))
        print(verdict)
        context["ti"].xcom_push(key="verdict", value=verdict)
        return APPROVAL if verdict["needs_approval"] else PUBLISH

    approval = SourceApprovalOperator(
        task_id=APPROVAL,
        subject="export_opendata: far fewer acteurs than last week; publish anyway?",
        body=("{{ ti.xcom_pull(task_ids='" + CHECK + "', key='verdict')['rows'] }} rows instead of "
              "{{ ti.xcom_pull(task_ids='" + CHECK + "', key='verdict')['previous_rows'] }} last time. "
              "Approve publishes the file; Reject (or no answer) keeps last week's."),
        defaults="Reject",
        retries=0,
    )

    @task(task_id=PUBLISH, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def publish(**context: Any) -> dict[str, Any]:
        from qfdmo.carte.opendata import Export
        from qfdmo.carte.opendata import publish as publish_file
        from qfdmo.pipeline import scratch_dir

        exported = context["ti"].xcom_pull(task_ids=EXPORT)
        with scratch_dir() as scratch:
            path = run_data(context).local_copy(EXPORT_FILE, scratch)
            export_file = Export(path=path, rows=exported["rows"], bytes=exported["bytes"])
            return publish_file(_s3_client(), export_file, bucket=context["params"]["bucket"])

    @task(task_id=REPORT, trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def report(**context: Any) -> dict[str, Any]:
        from qfdmo.pipeline import report_path, write_report

        ti = context["ti"]
        steps = {name: ti.xcom_pull(task_ids=name) for name in (BUILD, EXPORT, PUBLISH)}
        decision = ti.xcom_pull(task_ids=APPROVAL, key=DECISION_KEY) or {}
        outcome = ("published" if steps[PUBLISH] else
                   "not published: rejected" if decision.get("chosen_options") else "not published: failed")
        run_report = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], "outcome": outcome,
                      "check": ti.xcom_pull(task_ids=CHECK, key="verdict"), "approval": decision or None,
                      **steps}
        path = write_report(run_report, report_path(context["dag"].dag_id, context["run_id"]))
        print(run_report)
        print(f"Run report written to {path}")
        if outcome != "not published: failed":
            run_data(context).delete()
        else:
            # A failed run's file is kept for diagnosis, QFDMO_FAILED_RUN_RETENTION_DAYS days, like a
            # source run's data: recorded in qfdmo_platform.kept_run, swept by a later source cleanup.
            import psycopg
            from qfdmo.pipeline import retention
            from qfdmo.settings import settings

            with psycopg.connect(carte_dsn()) as conn:
                retention.keep(conn, run_data(context), context["dag"].dag_id, context["run_id"], outcome,
                               settings().failed_run_retention_days)
            fail("export_opendata: not published (a step failed, see above); the published file is unchanged")
        return run_report

    exported = export(build())
    branch = check(exported)
    published = publish()
    branch >> [approval, published]
    approval >> published
    published >> report()


export_opendata()
