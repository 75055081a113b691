"""What the source DAGs (dags/sources.py) need from Airflow besides the decorators: the approval
operator, the carte connection as a DSN, the run's working folder, and the decision of which step
made a run fail."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from airflow.providers.standard.operators.hitl import ApprovalOperator

CARTE_CONN_ID = "qfdmo_django_db"
DECISION_KEY = "decision"
# Task ids, also used in templates and XCom pulls.
DOWNLOAD, NORMALISE, STAGE, GUARD, APPROVAL, APPLY, REPORT = (
    "download",
    "normalise",
    "stage_and_diff",
    "guard",
    "request_approval",
    "apply",
    "report",
)


class SourceApprovalOperator(ApprovalOperator):
    """ApprovalOperator whose response timeout is the run's `approval_timeout` param (seconds), and
    which records the decision in XCom `decision` for the report.

    The stock operator fixes `response_timeout` when the DAG is parsed; here it depends on the run.
    On Reject it skips `apply` by raising, so it never returns a value: the decision (and whether the
    timeout made it) is pushed first.
    """

    def execute(self, context: Any) -> Any:
        self.response_timeout = timedelta(seconds=float(context["params"]["approval_timeout"]))
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            context["ti"].xcom_push(
                key=DECISION_KEY,
                value={
                    "chosen_options": list(event.get("chosen_options") or []),
                    "responded_by_user": event.get("responded_by_user"),
                    "timed_out": bool(event.get("timedout")),
                },
            )
        return super().execute_complete(context, event)


def carte_dsn(conn_id: str = CARTE_CONN_ID) -> str:
    """The carte database's Airflow connection (AIRFLOW_CONN_QFDMO_DJANGO_DB) as a libpq DSN."""
    from airflow.sdk import BaseHook
    from psycopg.conninfo import make_conninfo

    conn = BaseHook.get_connection(conn_id)
    return make_conninfo(
        host=conn.host or "",
        port=str(conn.port or ""),
        user=conn.login or "",
        password=conn.password or "",
        dbname=conn.schema or "",
    )


def run_dir(context: Any) -> Path:
    """The run's working folder under $QFDMO_DATA_DIR."""
    from qfdmo.pipeline import run_dir as folder

    return folder(context["dag"].dag_id, context["run_id"])


def fail(message: str) -> NoReturn:
    """Fail the task at once: retrying cannot fix these (empty feed, rejected rows, unknown codes)."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def failed_step(results: dict[str, Any], chosen: str | None, needs_approval: bool) -> str | None:
    """The task id of the step that made the run fail, or None when it did not fail.

    `results` maps download / normalise / stage / apply to what each returned (None: it did not
    succeed); `chosen` is the approval's answer if someone (or the timeout) gave one. A run whose
    apply did not happen because the approval said no has not failed; one whose approval task itself
    failed (no answer recorded while one was needed) failed at the approval.
    """
    step = next((name for name, value in results.items() if value is None), None)
    if step == "apply":
        if chosen is not None and chosen != "Approve":
            return None  # not applied by decision, not by failure
        if chosen is None and needs_approval:
            return APPROVAL
    if step == "stage":
        return STAGE
    return step
