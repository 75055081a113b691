"""`compute_acteurs`: what the carte shows, recomputed from the webapp's acteurs and revisions.

    build ─> guard ─┬────────────────────> swap ─> report
                    └─> request_approval ─┘

- `build`: `dbt build` of dags/qfdmo/carte_dbt but the open data (export_opendata builds it), models
  in schema qfdmo_carte, then their tests; a failing model or test fails the run and the webapp's
  tables are untouched.
- `guard`: if the displayed acteurs would fall by more than `max_drop_share` of the current table,
  a person decides (Airflow's human-in-the-loop approval, Reject by default at the timeout).
- `swap`: qfdmo_displayed* and qfdmo_vue* replaced in one transaction, difference only.
- `report`: task log + `$QFDMO_DATA_DIR/reports/compute_acteurs/<run_id>.json`.

Scheduled on the asset every source run emits when it wrote rows, and daily at 00:00 Europe/Paris
(revisions are edited in the webapp, which emits no event). One active run: events that arrive
during a run start one next run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, TriggerRule, dag, task
from qfdmo.airflow.assets import CARTE_ACTEURS
from qfdmo.airflow.source_tasks import DECISION_KEY, SourceApprovalOperator, carte_dsn, fail

BUILD, GUARD, APPROVAL, SWAP, REPORT = "build", "guard", "request_approval", "swap", "report"


@dag(
    dag_id="compute_acteurs",
    dag_display_name="Carte · acteurs affichés et vue exhaustive",
    description="dbt build of the carte's models, then swap into qfdmo_displayed* and qfdmo_vue*",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 0 * * *", timezone="Europe/Paris"), assets=[CARTE_ACTEURS]),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["qfdmo", "carte", "dbt"],
    default_args={"owner": "qfdmo-data", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "max_drop_share": Param(0.05, type="number", minimum=0, maximum=1,
                                description="Above this share of displayed acteurs lost, a person must approve."),
        "approval_timeout": Param(86_400, type="integer", minimum=1,
                                  description="Seconds to wait for the approval; then nothing is swapped."),
    },
)
def compute_acteurs() -> None:
    @task(task_id=BUILD, retries=0)
    def build(**context: Any) -> dict[str, Any]:
        from qfdmo.carte import DbtBuildError
        from qfdmo.carte.steps import build_models

        try:
            return build_models(carte_dsn(), float(context["params"]["max_drop_share"]))
        except DbtBuildError as exc:
            fail(str(exc))

    @task.branch(task_id=GUARD)
    def guard(built: dict[str, Any]) -> str:
        return APPROVAL if built["guard"]["needs_approval"] else SWAP

    approval = SourceApprovalOperator(
        task_id=APPROVAL,
        subject="compute_acteurs: the carte would lose many acteurs; swap anyway?",
        body="{{ ti.xcom_pull(task_ids='" + BUILD + "')['guard_markdown'] }}",
        defaults="Reject",
        retries=0,
    )

    @task(task_id=SWAP, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def swap(**context: Any) -> dict[str, Any]:
        from qfdmo.carte.steps import swap_tables

        decision = context["ti"].xcom_pull(task_ids=APPROVAL, key=DECISION_KEY) or {}
        approved = "Approve" in (decision.get("chosen_options") or [])
        result = swap_tables(carte_dsn(), float(context["params"]["max_drop_share"]), approved=approved)
        if result["status"] != "swapped":
            fail("the guard stopped the swap (the carte changed since the build): nothing was swapped")
        return result

    @task(task_id=REPORT, trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def report(**context: Any) -> dict[str, Any]:
        from qfdmo.carte.report import build_report, to_text
        from qfdmo.carte.steps import statistics
        from qfdmo.pipeline import report_path, write_report

        ti = context["ti"]
        steps = {"build": ti.xcom_pull(task_ids=BUILD), "swap": ti.xcom_pull(task_ids=SWAP)}
        decision = ti.xcom_pull(task_ids=APPROVAL, key=DECISION_KEY) or {}
        if steps["swap"]:
            outcome = "swapped"
        elif decision.get("chosen_options"):
            outcome = "not swapped: " + ("timed out" if decision.get("timed_out") else "rejected")
        else:
            outcome = "not swapped: failed at " + ("build" if not steps["build"] else "swap")
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        run_report = build_report(dag_id=dag_id, run_id=run_id, steps=steps, outcome=outcome,
                                  statistics=statistics(carte_dsn()) if steps["build"] else None)
        path = write_report(run_report, report_path(dag_id, run_id))
        print(to_text(run_report))
        print(f"Run report written to {path}")
        if outcome.startswith("not swapped: failed"):
            fail(f"compute_acteurs: {outcome} (see the report above); the webapp's tables are unchanged")
        return run_report

    built = build()
    branch = guard(built)
    swapped = swap()
    branch >> [approval, swapped]
    approval >> swapped
    swapped >> report()


compute_acteurs()
