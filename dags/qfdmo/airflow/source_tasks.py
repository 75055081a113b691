"""The Airflow side of the source DAGs (dags/sources.py wires these): one function per task, the
approval operator, the carte connection as a DSN, the run's working folder, and the decisions
that need Airflow's view of a run (which step failed, whether to keep the run's files).

Each task function is the XCom boundary: it reads the typed results of the steps before it from
XCom (`from_dict`), calls the plain step (qfdmo.pipeline.steps) and returns its result `to_dict`.
Imported when DAG files are parsed: the pipeline itself is imported only when a task runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.standard.operators.hitl import ApprovalOperator

if TYPE_CHECKING:
    from qfdmo.pipeline import Approval, RunResults
    from qfdmo.sources import SourceDeclaration

CARTE_CONN_ID = "qfdmo_django_db"
# XCom keys besides the tasks' return values.
DECISION_KEY = "decision"  # the approval's answer
FEED_CHECK_KEY = "feed_check"  # the fast-path decision, in full (the task returns only yes/no)
APPROVAL_BODY_KEY = "approval_body"  # the preview report shown in the approval form
# Task ids, also used in templates and XCom pulls.
DOWNLOAD, CHECK_FEED, NORMALISE, STAGE, GUARD, APPROVAL, APPLY, ANNOUNCE, REPORT, CLEANUP = (
    "download",
    "check_feed",
    "normalise",
    "stage_and_diff",
    "guard",
    "request_approval",
    "apply",
    "announce_change",
    "report",
    "cleanup",
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


def _run_key(context: Any) -> str:
    from qfdmo.pipeline import run_key

    return run_key(context["dag"].dag_id, context["run_id"])


def fail(message: str) -> NoReturn:
    """Fail the task at once: retrying cannot fix these (empty feed, rejected rows, unknown codes)."""
    from airflow.sdk.exceptions import AirflowFailException

    raise AirflowFailException(message)


def results(ti: Any) -> RunResults:
    """The typed results of the run's steps, read back from XCom."""
    from qfdmo.pipeline import Applied, Downloaded, FeedCheck, Normalised, RunResults, Staged

    return RunResults(
        downloaded=Downloaded.from_xcom(ti.xcom_pull(task_ids=DOWNLOAD)),
        checked=FeedCheck.from_xcom(ti.xcom_pull(task_ids=CHECK_FEED, key=FEED_CHECK_KEY)),
        normalised=Normalised.from_xcom(ti.xcom_pull(task_ids=NORMALISE)),
        staged=Staged.from_xcom(ti.xcom_pull(task_ids=STAGE)),
        applied=Applied.from_xcom(ti.xcom_pull(task_ids=APPLY)),
    )


def approval(ti: Any) -> Approval | None:
    from qfdmo.pipeline import Approval

    return Approval.from_xcom(ti.xcom_pull(task_ids=APPROVAL, key=DECISION_KEY))


def failed_step(results: RunResults, chosen: str | None) -> str | None:
    """The task id of the step that made the run fail, or None when it did not fail.

    A step whose result is missing did not succeed, unless the run did not need it: after an
    unchanged feed nothing follows the check; an apply the approval said no to (`chosen`: the
    answer of a person or of the timeout) did not fail. An approval that was needed but recorded
    no answer failed itself.
    """
    steps = (
        (DOWNLOAD, results.downloaded),
        (CHECK_FEED, results.checked),
        (NORMALISE, results.normalised),
        (STAGE, results.staged),
        (APPLY, results.applied),
    )
    step = next((name for name, value in steps if value is None), None)
    if step is None or (step != CHECK_FEED and results.unchanged):
        return None
    if step == APPLY and results.staged is not None and results.staged.needs_approval:
        if chosen is None:
            return APPROVAL
        if chosen != "Approve":
            return None  # not applied by decision, not by failure
    return step


# --- the tasks, in the order they run ---


def download(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    from qfdmo.feeds import EmptyFeedError
    from qfdmo.pipeline import steps

    try:
        return steps.download(declaration, context["params"]["endpoint_url"], run_dir(context)).to_dict()
    except EmptyFeedError as exc:
        fail(str(exc))


def feed_changed(declaration: SourceDeclaration, downloaded: dict[str, Any], context: Any) -> bool:
    """The fast-path decision (a short-circuit: False skips normalise, stage, guard and apply)."""
    from qfdmo.pipeline import Downloaded, steps

    checked = steps.check_feed(declaration, run_dir(context), carte_dsn(), Downloaded.from_dict(downloaded))
    context["ti"].xcom_push(key=FEED_CHECK_KEY, value=checked.to_dict())
    print(f"{declaration.dag_id}: {checked.reason}")
    return not checked.unchanged


def normalise(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    from qfdmo.pipeline import PipelineError, steps
    from qfdmo.sources import ConfigurationError

    try:
        return steps.normalise(declaration, run_dir(context), carte_dsn()).to_dict()
    except (PipelineError, ConfigurationError) as exc:
        fail(str(exc))


def stage_and_diff(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    """Stage and diff; the preview report goes to the log and, for the approval form, to XCom."""
    import dataclasses

    from qfdmo.carte_db import StagingError
    from qfdmo.pipeline import build_report, steps, to_markdown, to_text

    try:
        staged = steps.stage(declaration, run_dir(context), _run_key(context), carte_dsn(),
                             float(context["params"]["max_deactivation_share"]))
    except StagingError as exc:
        fail(str(exc))
    ti = context["ti"]
    preview = build_report(dag_id=context["dag"].dag_id, run_id=context["run_id"], source=declaration.code,
                           results=dataclasses.replace(results(ti), staged=staged))
    print(to_text(preview))
    ti.xcom_push(key=APPROVAL_BODY_KEY, value=to_markdown(preview))
    return staged.to_dict()


def guard(staged: dict[str, Any]) -> str:
    from qfdmo.pipeline import Staged

    return APPROVAL if Staged.from_dict(staged).needs_approval else APPLY


def apply(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    from qfdmo.pipeline import steps

    run = results(context["ti"])
    return steps.apply(declaration, _run_key(context), carte_dsn(), run.checked, run.normalised,
                       run.staged).to_dict()


def announce_change(declaration: SourceDeclaration, applied: dict[str, Any], context: Any) -> None:
    """Emit the task's outlet (the carte's acteurs changed) only when the apply wrote rows: a
    skipped task emits no asset event."""
    from airflow.sdk.exceptions import AirflowSkipException

    from qfdmo.airflow.assets import CARTE_ACTEURS
    from qfdmo.pipeline import Applied

    written = Applied.from_dict(applied)
    if not written.wrote_rows:
        raise AirflowSkipException("the apply wrote nothing: the carte's acteurs did not change")
    context["outlet_events"][CARTE_ACTEURS].extra = {
        "source": declaration.code,
        "dag_run": context["run_id"],
        "new": written.diff.new,
        "changed": written.diff.changed,
        "deactivated": written.diff.to_deactivate,
        "rows_written": written.total_rows_written,
    }


def report(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    """Log the run report and write it to `$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`."""
    from qfdmo.pipeline import build_report, report_path, to_text, write_report

    ti = context["ti"]
    run, answer = results(ti), approval(ti)
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    run_report = build_report(
        dag_id=dag_id,
        run_id=run_id,
        source=declaration.code,
        results=run,
        approval=answer,
        failed_step=failed_step(run, answer.chosen if answer else None),
        approval_timeout=context["params"]["approval_timeout"],
    )
    path = write_report(run_report, report_path(dag_id, run_id))
    print(to_text(run_report))
    print(f"Run report written to {path}")
    return run_report


def cleanup(context: Any) -> None:
    """Drop the run's staging tables; remove its files once the run is settled (applied, unchanged,
    rejected, timed out): a failed run's files are kept for diagnosis."""
    from qfdmo.pipeline import SETTLED_OUTCOMES, outcome, steps

    ti = context["ti"]
    run, answer = results(ti), approval(ti)
    result = outcome(run, answer, failed_step(run, answer.chosen if answer else None))
    keep = result not in SETTLED_OUTCOMES
    steps.finish(_run_key(context), carte_dsn(), run_dir(context), keep_files=keep)
    print(f"run {result}: staging tables dropped, files {'kept in ' + str(run_dir(context)) if keep else 'removed'}")
