"""The Airflow side of the source DAGs (dags/sources.py wires these): one function per task, the
approval operator, the carte connection as a DSN, the run's data in S3 (connection `s3runs`), and
the decisions that need Airflow's view of a run (which step failed, whether to keep the run's data).

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
    from qfdmo.pipeline import Approval, RunResults, S3RunData, S3RunStore
    from qfdmo.sources import SourceDeclaration

CARTE_CONN_ID = "qfdmo_django_db"
# The S3 where a run's tasks hand each other its data (AIRFLOW_CONN_S3RUNS; bucket: QFDMO_RUN_DATA_BUCKET).
RUN_DATA_CONN_ID = "s3runs"
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
    """A run's folder under $QFDMO_DATA_DIR on this machine (export_opendata's; the source DAGs
    keep their runs' data in S3: `run_data`)."""
    from qfdmo.pipeline import run_dir as folder

    return folder(context["dag"].dag_id, context["run_id"])


def run_store() -> S3RunStore:
    """The platform's run-data bucket, through the Amazon provider's hook on connection `s3runs`."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from qfdmo.pipeline import S3RunStore

    return S3RunStore.from_setting(S3Hook(aws_conn_id=RUN_DATA_CONN_ID).get_conn())


def run_data(context: Any, store: S3RunStore | None = None) -> S3RunData:
    """This run's data in S3: what its tasks hand each other, whatever machine each runs on."""
    return (store or run_store()).run(context["dag"].dag_id, context["run_id"])


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
        return steps.download(declaration, context["params"]["endpoint_url"], run_data(context)).to_dict()
    except EmptyFeedError as exc:
        fail(str(exc))


def feed_changed(declaration: SourceDeclaration, downloaded: dict[str, Any], context: Any) -> bool:
    """The fast-path decision (a short-circuit: False skips normalise, stage, guard and apply)."""
    from qfdmo.pipeline import Downloaded, steps

    checked = steps.check_feed(declaration, run_data(context), carte_dsn(), Downloaded.from_dict(downloaded))
    context["ti"].xcom_push(key=FEED_CHECK_KEY, value=checked.to_dict())
    print(f"{declaration.dag_id}: {checked.reason}")
    return not checked.unchanged


def normalise(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    from qfdmo.pipeline import PipelineError, steps
    from qfdmo.sources import ConfigurationError

    try:
        return steps.normalise(declaration, run_data(context), _run_key(context), carte_dsn()).to_dict()
    except (PipelineError, ConfigurationError) as exc:
        fail(str(exc))


def stage_and_diff(declaration: SourceDeclaration, context: Any) -> dict[str, Any]:
    """Stage and diff; the preview report goes to the log and, for the approval form, to XCom."""
    import dataclasses

    from qfdmo.carte_db import StagingError
    from qfdmo.pipeline import build_report, steps, to_markdown, to_text

    try:
        staged = steps.stage(declaration, _run_key(context), carte_dsn(),
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
    """Log the run report and write it to the run-data bucket (`reports/<dag_id>/<run_id>.json`);
    it is also this task's XCom."""
    import json

    from qfdmo.pipeline import build_report, to_text

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
    print(to_text(run_report))
    body = json.dumps(run_report, ensure_ascii=False, indent=2).encode()
    print(f"Run report written to {run_store().put_report(dag_id, run_id, body)}")
    return run_report


def cleanup(context: Any) -> None:
    """Drop the run's staging tables; remove its data once the run is settled (applied, unchanged,
    rejected, timed out), keep a failed run's for diagnosis (QFDMO_FAILED_RUN_RETENTION_DAYS), and
    sweep the kept data of older runs past their date."""
    from qfdmo.pipeline import SETTLED_OUTCOMES, outcome, steps
    from qfdmo.settings import settings

    ti = context["ti"]
    run, answer = results(ti), approval(ti)
    result = outcome(run, answer, failed_step(run, answer.chosen if answer else None))
    store = run_store()
    data = run_data(context, store)
    finished = steps.finish(
        _run_key(context), carte_dsn(), data, settled=result in SETTLED_OUTCOMES, dag_id=context["dag"].dag_id,
        run_id=context["run_id"], outcome=result, retention_days=settings().failed_run_retention_days,
        sweep_with=store.at,
    )
    if finished.kept_until is not None:
        kept = f"kept until {finished.kept_until.isoformat(timespec='minutes')} in {data.location}"
    elif result not in SETTLED_OUTCOMES:
        kept = f"kept in {data.location} (no retention record)"
    else:
        kept = f"removed ({finished.removed} objects)"
    print(f"run {result}: staging tables dropped, run data {kept}; "
          f"kept data of {finished.swept} older failed run(s) swept")
