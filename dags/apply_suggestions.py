"""Apply the suggestions people validated in the webapp's admin (statut ATRAITER), every 5 minutes.

    has_work -> apply -> changed -> announce (asset carte_acteurs)

`has_work` is one EXISTS query: with nothing ATRAITER (or left ENCOURS by a crash) the run stops
there. `apply` applies each suggestion in its own transaction (ENCOURS -> SUCCES, or ERREUR with
the reason in its metadata; a stale suggestion is never half-applied), updates each cohorte's
statut, logs the report and writes it to `$QFDMO_DATA_DIR/reports/apply_suggestions/<run_id>.json`.
When something was applied, `announce` emits the asset compute_acteurs is scheduled on, so the
carte is recomputed.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import dag, task
from qfdmo.airflow.assets import CARTE_ACTEURS
from qfdmo.airflow.source_tasks import carte_dsn


@dag(
    dag_id="apply_suggestions",
    dag_display_name="Suggestions · application des suggestions validées",
    description="Applique les suggestions validées (ATRAITER) dans la base carte, puis annonce les acteurs changés",
    doc_md=__doc__,
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # a suggestion is applied by one run only
    dagrun_timeout=timedelta(minutes=30),
    tags=["qfdmo", "dedup", "suggestions"],
    default_args={"owner": "qfdmo-data", "retries": 1, "retry_delay": timedelta(minutes=1)},
)
def apply_suggestions() -> None:
    @task.short_circuit
    def has_work() -> bool:
        from qfdmo.dedup.apply import has_work as waiting

        return waiting(carte_dsn())

    @task
    def apply(**context: Any) -> dict[str, Any]:
        from qfdmo.dedup.apply import apply_pending
        from qfdmo.pipeline import report_path, write_report

        report = {"dag_id": context["dag"].dag_id, "run_id": context["run_id"], **apply_pending(carte_dsn())}
        path = write_report(report, report_path(context["dag"].dag_id, context["run_id"]))
        print(f"Apply report {report['run_id']}: picked={report['picked']} succes={report['succes']}"
              f" erreur={report['erreur']} cohortes={json.dumps(report['cohortes'])} in {report['seconds']} s")
        for error in report["errors"]:
            print(f"  suggestion {error['suggestion_id']}: ERREUR {error['reason']}")
        print(f"Apply report written to {path}")
        return report

    @task.short_circuit
    def changed(report: dict[str, Any]) -> bool:
        return report["succes"] > 0

    @task(outlets=[CARTE_ACTEURS])
    def announce() -> None:
        """Succeeds, hence emits the asset event compute_acteurs is scheduled on."""

    applied = apply()
    has_work() >> applied
    changed(applied) >> announce()


apply_suggestions()
