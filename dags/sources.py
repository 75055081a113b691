"""One DAG per source declaration (`dags/qfdmo/sources/declarations/<code>.yaml`): `source_<code>`.

    download -> normalise -> stage_and_diff -> guard ─┬──────────────────────> apply -> report
                                                      └─> request_approval ──┘

- The guard asks a human (Airflow's human-in-the-loop ApprovalOperator, showing the run report)
  when the run would set more than `max_deactivation_share` of the source's ACTIF acteurs SUPPRIME;
  Reject, or no answer within `approval_timeout` seconds, applies nothing.
- `report` runs whatever happened: it logs the run report, writes it to
  `$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`, drops the staging tables and fails the run if a
  step failed (the carte DB is then exactly as before: apply is one transaction).
- Manual trigger (schedule=None), as upstream: partners publish irregularly, a run may wait a day for
  a human, and every run writes the webapp's database, so starting one stays a deliberate act.

Only the declarations are read at import (local YAML files); everything heavy is imported in tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, task
from qfdmo.airflow.source_tasks import (
    APPLY,
    APPROVAL,
    DECISION_KEY,
    DOWNLOAD,
    GUARD,
    NORMALISE,
    REPORT,
    STAGE,
    SourceApprovalOperator,
    carte_dsn,
    fail,
    failed_step,
    run_dir,
)
from qfdmo.sources import SourceDeclaration, load_declarations

OWNER = "qfdmo-data"
TAGS = ["qfdmo", "source"]
DEFAULT_MAX_DEACTIVATION_SHARE = 0.1
DEFAULT_APPROVAL_TIMEOUT = 86_400  # seconds: a working day to answer


def build_source_dag(declaration: SourceDeclaration):
    @dag(
        dag_id=declaration.dag_id,
        dag_display_name=f"Source · {declaration.libelle}",
        description=(declaration.description or declaration.libelle)[:200],
        doc_md=__doc__,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,  # two runs of one source would diff against each other's writes
        tags=[*TAGS, declaration.format, declaration.code],
        default_args={"owner": OWNER, "retries": 1, "retry_delay": timedelta(minutes=2)},
        params={
            "endpoint_url": Param(
                declaration.feed_url,
                type="string",
                description="Feed URL (for data-fair, the dataset's …/lines endpoint).",
            ),
            "max_deactivation_share": Param(
                DEFAULT_MAX_DEACTIVATION_SHARE,
                type="number",
                minimum=0,
                maximum=1,
                description="Above this share of ACTIF acteurs set SUPPRIME, a human must approve.",
            ),
            "approval_timeout": Param(
                DEFAULT_APPROVAL_TIMEOUT,
                type="integer",
                minimum=1,
                description="Seconds to wait for the approval; then nothing is applied.",
            ),
        },
    )
    def source_dag() -> None:
        @task(task_id=DOWNLOAD)
        def download(**context: Any) -> dict[str, Any]:
            from qfdmo.feeds import EmptyFeedError
            from qfdmo.pipeline import steps

            try:
                return steps.download(declaration, context["params"]["endpoint_url"], run_dir(context))
            except EmptyFeedError as exc:
                fail(str(exc))
                raise

        @task(task_id=NORMALISE)
        def normalise(downloaded: dict[str, Any], **context: Any) -> dict[str, Any]:
            from qfdmo.pipeline import PipelineError, steps
            from qfdmo.sources import ConfigurationError

            try:
                return steps.normalise(declaration, run_dir(context), carte_dsn(), downloaded)
            except (PipelineError, ConfigurationError) as exc:
                fail(str(exc))
                raise

        @task(task_id=STAGE)
        def stage_and_diff(normalised: dict[str, Any], **context: Any) -> dict[str, Any]:
            from qfdmo.carte_db import StagingError
            from qfdmo.pipeline import build_report, run_key, steps, to_markdown, to_text

            key = run_key(context["dag"].dag_id, context["run_id"])
            try:
                staged = steps.stage(
                    declaration,
                    run_dir(context),
                    key,
                    carte_dsn(),
                    float(context["params"]["max_deactivation_share"]),
                    normalised,
                )
            except StagingError as exc:
                fail(str(exc))
                raise
            preview = build_report(
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
                source=declaration.code,
                steps={"download": context["ti"].xcom_pull(task_ids=DOWNLOAD), "normalise": normalised,
                       "stage": staged},
            )
            print(to_text(preview))
            staged["markdown"] = to_markdown(preview)
            return staged

        @task.branch(task_id=GUARD)
        def guard(staged: dict[str, Any]) -> str:
            return APPROVAL if staged["needs_approval"] else APPLY

        approval = SourceApprovalOperator(
            task_id=APPROVAL,
            subject=f"{declaration.dag_id}: apply a run that deactivates many acteurs?",
            body="{{ ti.xcom_pull(task_ids='" + STAGE + "')['markdown'] }}",
            defaults="Reject",  # the timeout answers Reject: nothing is applied
            retries=0,
        )

        @task(task_id=APPLY, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def apply(**context: Any) -> dict[str, Any]:
            from qfdmo.pipeline import run_key, steps

            return steps.apply(
                declaration,
                run_key(context["dag"].dag_id, context["run_id"]),
                carte_dsn(),
                run_dir(context),
                context["ti"].xcom_pull(task_ids=STAGE),
            )

        @task(task_id=REPORT, trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def report(**context: Any) -> dict[str, Any]:
            from qfdmo.pipeline import (
                SETTLED_OUTCOMES,
                Approval,
                build_report,
                report_path,
                run_key,
                steps,
                to_text,
                write_report,
            )

            ti = context["ti"]
            results = {
                "download": ti.xcom_pull(task_ids=DOWNLOAD),
                "normalise": ti.xcom_pull(task_ids=NORMALISE),
                "stage": ti.xcom_pull(task_ids=STAGE),
                "apply": ti.xcom_pull(task_ids=APPLY),
            }
            answer = Approval.from_xcom(ti.xcom_pull(task_ids=APPROVAL, key=DECISION_KEY))
            failed = failed_step(results, answer.chosen if answer else None,
                                 bool(results["stage"] and results["stage"]["needs_approval"]))
            dag_id, run_id = context["dag"].dag_id, context["run_id"]
            run_report = build_report(
                dag_id=dag_id,
                run_id=run_id,
                source=declaration.code,
                steps=results,
                approval=answer,
                failed_step=failed,
                approval_timeout=context["params"]["approval_timeout"],
            )
            path = write_report(run_report, report_path(dag_id, run_id))
            print(to_text(run_report))
            print(f"Run report written to {path}")
            steps.finish(
                run_key(dag_id, run_id),
                carte_dsn(),
                run_dir(context),
                keep_files=run_report["outcome"] not in SETTLED_OUTCOMES,  # a failed run's files help debugging
            )
            if failed:
                fail(f"{dag_id}: {run_report['outcome']} (see the run report above); the carte DB is unchanged")
            return run_report

        # TaskFlow calls pass XComArgs, resolved to the typed values when the tasks run.
        staged = stage_and_diff(normalise(download()))  # type: ignore[arg-type]
        branch = guard(staged)  # type: ignore[arg-type]
        applied = apply()
        branch >> [approval, applied]
        approval >> applied
        applied >> report()

    return source_dag()


for _declaration in load_declarations().values():
    globals()[_declaration.dag_id] = build_source_dag(_declaration)
