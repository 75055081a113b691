"""One DAG per source declaration (`dags/qfdmo/sources/declarations/<code>.yaml`): `source_<code>`.

    download -> check_feed -> normalise -> stage_and_diff -> guard ─┬──────────────────────> apply ─┬─> announce_change
                                                                    └─> request_approval ──┘        └─> report
                                                                              (teardown, whatever happened) cleanup

- `check_feed` short-circuits the run when the feed is identical to the last applied one and the
  source's acteurs are untouched since: normalise, stage, guard and apply are skipped, and the
  report says "unchanged".
- The guard asks a human (Airflow's human-in-the-loop ApprovalOperator, showing the run report)
  when the run would set more than `max_deactivation_share` of the source's ACTIF acteurs SUPPRIME;
  Reject, or no answer within `approval_timeout` seconds, applies nothing.
- `announce_change` emits the CARTE_ACTEURS asset when the apply wrote rows (skipped otherwise:
  no event on unchanged, rejected or failed runs).
- `report` runs whatever happened: it logs the run report and writes it to
  `$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`. A failed step fails the run by itself (the carte
  DB is then exactly as before: apply is one transaction).
- `cleanup` (a teardown) drops the run's staging tables and removes its files once the run is
  settled; a failed run's files are kept for diagnosis.
- Manual trigger (schedule=None), as upstream: partners publish irregularly, a run may wait a day for
  a human, and every run writes the webapp's database, so starting one stays a deliberate act.

Only the declarations are read at import (local YAML files); the task bodies are in
qfdmo/airflow/source_tasks.py, the work in qfdmo/pipeline/.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, TriggerRule, dag, get_parsing_context, task, teardown
from qfdmo.airflow import source_tasks as tasks
from qfdmo.airflow.assets import CARTE_ACTEURS
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
        @task(task_id=tasks.DOWNLOAD)
        def download(**context: Any) -> dict[str, Any]:
            return tasks.download(declaration, context)

        # Only the direct downstream task is skipped by the short-circuit; the trigger rules then
        # skip the rest of the chain and still run the report and the cleanup.
        @task.short_circuit(task_id=tasks.CHECK_FEED, ignore_downstream_trigger_rules=False)
        def check_feed(downloaded: dict[str, Any], **context: Any) -> bool:
            return tasks.feed_changed(declaration, downloaded, context)

        @task(task_id=tasks.NORMALISE)
        def normalise(**context: Any) -> dict[str, Any]:
            return tasks.normalise(declaration, context)

        @task(task_id=tasks.STAGE)
        def stage_and_diff(**context: Any) -> dict[str, Any]:
            return tasks.stage_and_diff(declaration, context)

        @task.branch(task_id=tasks.GUARD)
        def guard(staged: dict[str, Any]) -> str:
            return tasks.guard(staged)

        approval = tasks.SourceApprovalOperator(
            task_id=tasks.APPROVAL,
            subject=f"{declaration.dag_id}: apply a run that deactivates many acteurs?",
            body="{{ ti.xcom_pull(task_ids='" + tasks.STAGE + "', key='" + tasks.APPROVAL_BODY_KEY + "') }}",
            defaults="Reject",  # the timeout answers Reject: nothing is applied
            retries=0,
        )

        @task(task_id=tasks.APPLY, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
        def apply(**context: Any) -> dict[str, Any]:
            return tasks.apply(declaration, context)

        @task(task_id=tasks.ANNOUNCE, outlets=[CARTE_ACTEURS])
        def announce_change(applied: dict[str, Any], **context: Any) -> None:
            tasks.announce_change(declaration, applied, context)

        @task(task_id=tasks.REPORT, trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def report(**context: Any) -> dict[str, Any]:
            return tasks.report(declaration, context)

        @teardown
        @task(task_id=tasks.CLEANUP)
        def cleanup(**context: Any) -> None:
            tasks.cleanup(context)

        # TaskFlow calls pass XComArgs, resolved to the values when the tasks run.
        staged = stage_and_diff()
        check_feed(download()) >> normalise() >> staged
        branch = guard(staged)
        applied = apply()
        branch >> [approval, applied]
        approval >> applied
        ran = [announce_change(applied), report()]
        applied >> ran
        ran >> cleanup()

    return source_dag()


# A task process parses this file only to find its own DAG (Airflow tells which): building the other
# seventeen would cost every task of every source run ~0.3 s for nothing.
_running = get_parsing_context().dag_id
for _declaration in load_declarations().values():
    if _running is None or _running == _declaration.dag_id:
        globals()[_declaration.dag_id] = build_source_dag(_declaration)
