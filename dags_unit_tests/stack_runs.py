"""Driving DAG runs on the test session's Airflow stack, for the carte's and the dedup's end-to-end
tests: `bin/airflow dags test` (the run in the CLI's own process) and runs through the running
scheduler (REST API), which is what a human-in-the-loop approval needs (under `dags test` it waits
forever), with the approval answered as a person does in the UI. Run and task states are read
from Airflow's metadata database."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from devstack.processes import wait_until

_TOKENS: dict[str, str] = {}
FINISHED = ("success", "failed")


def api(stack, method: str, path: str, body: dict | None = None, attempts: int = 5) -> dict:
    """REST call (/api/v2 + path) with a cached token; a busy api-server (timeouts, 5xx) is retried."""
    for attempt in range(1, attempts + 1):
        try:
            if stack.api_url not in _TOKENS:
                _TOKENS[stack.api_url] = stack.token()
            request = urllib.request.Request(
                f"{stack.api_url}/api/v2{path}", method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {_TOKENS[stack.api_url]}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
            return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                _TOKENS.pop(stack.api_url, None)
            elif exc.code < 500 or attempt == attempts:
                raise
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            if attempt == attempts:
                raise
        time.sleep(2 * attempt)  # back-off between retries of a busy api-server, not a wait on state
    raise AssertionError("unreachable")


def report_of(stack, dag_id: str, run_id: str) -> dict[str, Any]:
    """The JSON report the run wrote ($QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json)."""
    from qfdmo.pipeline.paths import report_path

    return json.loads(report_path(dag_id, run_id, base=Path(stack.env["QFDMO_DATA_DIR"])).read_text())


def dags_test(stack, dag_id: str, conf: dict | None = None, timeout: float = 900) -> dict[str, Any]:
    """`bin/airflow dags test DAG [-c CONF]` must succeed; returns the report the run wrote, with
    the CLI's output under `_output`."""
    folder = Path(stack.env["QFDMO_DATA_DIR"]) / "reports" / dag_id
    before = set(folder.glob("*.json")) if folder.exists() else set()
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf is not None else [])
    result = stack.airflow(*args, timeout=timeout)
    output = result.stdout + result.stderr
    created = sorted(set(folder.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    assert result.returncode == 0 and created, output[-6000:]
    return {**json.loads(created[-1].read_text()), "_output": output}


def set_paused(stack, dag_id: str, paused: bool) -> None:
    wait_until(lambda: dag_parsed(stack, dag_id), f"{dag_id} to be parsed", 120, interval=0.3)
    api(stack, "PATCH", f"/dags/{dag_id}", {"is_paused": paused})


def dag_parsed(stack, dag_id: str) -> bool:
    """Whether the dag-processor has written the DAG (the REST API knows it)."""
    try:
        return bool(api(stack, "GET", f"/dags/{dag_id}"))
    except urllib.error.HTTPError:
        return False


def trigger(stack, dag_id: str, conf: dict) -> str:
    """A manual run through the scheduler, then the DAG unpaused (a paused DAG's runs never start).

    Unpausing a scheduled DAG makes the scheduler start the run of its latest tick at once
    (catchup=False still runs the most recent one): a whole extra compute or export in a test. When
    that tick is due, the manual run takes its logical date, and the scheduler, finding a run there
    already, starts none for it."""
    wait_until(lambda: dag_parsed(stack, dag_id), f"{dag_id} to be parsed", 120, interval=0.3)
    dag = api(stack, "GET", f"/dags/{dag_id}")
    due = dag.get("next_dagrun_run_after")
    logical_date = dag.get("next_dagrun_logical_date") if due and _parse(due) <= datetime.now(UTC) else None
    try:
        run = api(stack, "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf})
    except urllib.error.HTTPError as exc:
        if exc.code != 409 or logical_date is None:
            raise
        # An earlier manual run holds that tick already (the dag-processor, re-parsing the DAG,
        # points the next tick back at it): the scheduler skips it all the same.
        run = api(stack, "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    api(stack, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    return run["dag_run_id"]


def _parse(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def _metadata_row(stack, query: str, params: tuple) -> tuple | None:
    """One row of Airflow's metadata database. The waits poll states there: a REST call costs the
    api-server tens of milliseconds of CPU, taken from the scheduler and the tasks under test."""
    with psycopg.connect(stack.config.dsn("airflow")) as conn:
        return conn.execute(query, params).fetchone()


def run_state(stack, dag_id: str, run_id: str) -> str | None:
    row = _metadata_row(stack, "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
    return row[0] if row else None


def finished(stack, dag_id: str, run_id: str, timeout: float = 600) -> str:
    return wait_until(lambda: (s := run_state(stack, dag_id, run_id)) in FINISHED and s,
                      f"{dag_id} {run_id} to finish", timeout, interval=0.3)


def succeeded(stack, dag_id: str, run_id: str, timeout: float = 600) -> bool:
    """Waits for the run to finish; a failed run fails the test with its tasks' states and the logs
    of the failed ones."""
    if finished(stack, dag_id, run_id, timeout) == "success":
        return True
    raise AssertionError(f"{dag_id} {run_id} failed: {failure_report(stack, dag_id, run_id)}")


def run_to_success(stack, dag_id: str, conf: dict) -> tuple[str, dict[str, Any]]:
    """One run through the scheduler that must succeed, the DAG paused again after it; returns the
    run id and the report it wrote."""
    run_id = trigger(stack, dag_id, conf)
    assert succeeded(stack, dag_id, run_id)
    set_paused(stack, dag_id, True)
    return run_id, report_of(stack, dag_id, run_id)


def failure_report(stack, dag_id: str, run_id: str) -> str:
    """The run's task states and the end of its failed tasks' logs (first try)."""
    run = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
    states = {t["task_id"]: t["state"] for t in api(stack, "GET", f"{run}/taskInstances")["task_instances"]}
    logs = []
    for task_id in (t for t, state in states.items() if state == "failed"):
        try:
            content = task_log(stack, dag_id, run_id, task_id)
        except urllib.error.HTTPError as exc:
            content = f"(log unavailable: {exc})"
        logs.append(f"--- {task_id} ---\n" + "\n".join(_log_lines(content)[-80:]))
    return f"{states}\n" + "\n".join(logs)


def task_log(stack, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> Any:
    """A task's whole log through the REST API (read back from S3 on the test stacks)."""
    run = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}"
    return api(stack, "GET", f"{run}/taskInstances/{task_id}/logs/{try_number}?full_content=true")["content"]


def _log_lines(content: Any) -> list[str]:
    """A task log as the REST API returns it (a list of structured entries, or text) as lines: each
    entry's event, and an exception's type, message and last frames."""
    if not isinstance(content, list):
        return str(content).splitlines()
    lines = []
    for entry in content:
        if not isinstance(entry, dict):
            lines.append(str(entry))
            continue
        lines.append(str(entry.get("event", "")))
        for error in entry.get("error_detail") or []:
            frames = [f"{f.get('filename')}:{f.get('lineno')} {f.get('name')}" for f in error.get("frames", [])]
            lines.append(f"  {error.get('exc_type')}: {error.get('exc_value')}")
            lines.extend(f"    at {frame}" for frame in frames[-8:])
    return lines


def wait_while_running(stack, dag_id: str, run_id: str, condition: Callable[[], object], what: str,
                       timeout: float = 600, interval: float = 1) -> None:
    """Waits for `condition` while the run goes on; a run that ends first (a task failed) fails the
    test at once, with its failed tasks' logs, instead of after the whole timeout."""
    def reached() -> bool:
        if condition():
            return True
        if (state := run_state(stack, dag_id, run_id)) in FINISHED:
            raise AssertionError(f"{dag_id} {run_id} ended ({state}) before {what}: "
                                 f"{failure_report(stack, dag_id, run_id)}")
        return False

    wait_until(reached, what, timeout, interval=interval)


def task_state(stack, dag_id: str, run_id: str, task_id: str) -> str | None:
    row = _metadata_row(stack, "SELECT state FROM task_instance WHERE dag_id = %s AND run_id = %s"
                        " AND task_id = %s AND map_index = -1", (dag_id, run_id, task_id))
    return row[0] if row else None


def answer_approval(stack, dag_id: str, run_id: str, choice: str, task_id: str = "request_approval") -> dict:
    """Answers the approval form once it is up and the scheduler is done with the paused task, as
    a person would; returns the form (subject, body) as the person saw it."""
    wait_while_running(stack, dag_id, run_id, lambda: task_state(stack, dag_id, run_id, task_id) == "awaiting_input",
                       f"the approval request of {dag_id} {run_id}")
    hitl = f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}/-1/hitlDetails"
    form = api(stack, "GET", hitl)
    # An answer that re-queues the task before the scheduler has consumed the pausing workload's
    # "success" event makes Airflow 3.3 take that stale event for the new attempt and fail the task.
    # The scheduler logs "TaskInstance Finished" for the task once it has popped that event from its
    # buffer: wait for that line, as a person would come later.
    scheduler_log = stack.stack.config.state_dir / "logs" / "scheduler.log"
    consumed = f"TaskInstance Finished: dag_id={dag_id}, task_id={task_id}, run_id={run_id},"
    wait_until(lambda: consumed in scheduler_log.read_text(errors="replace"),
               "the scheduler to consume the paused workload's event", 120, interval=0.3)
    api(stack, "PATCH", hitl, {"chosen_options": [choice]})
    return form


def runs_created_by_events(stack, source_dag_id: str, source_run_id: str, dag_id: str,
                           timeout: float = 300) -> list[str]:
    """The runs of `dag_id` that the asset events of one run started (waits until there is one)."""
    query = urllib.parse.urlencode({"source_dag_id": source_dag_id, "source_run_id": source_run_id})

    def created() -> list[str]:
        events = api(stack, "GET", f"/assets/events?{query}")["asset_events"]
        return [r["run_id"] for e in events for r in e.get("created_dagruns") or [] if r.get("dag_id") == dag_id]

    return wait_until(created, f"an asset event of {source_dag_id} {source_run_id} to start {dag_id}", timeout,
                      interval=0.3)


def wait_idle(stack, dag_id: str, timeout: float = 600) -> None:
    """Until no run of the DAG is queued or running (so that the next test starts from a settled carte)."""
    wait_until(lambda: not api(stack, "GET", f"/dags/{dag_id}/dagRuns?state=queued&state=running")["dag_runs"],
               f"{dag_id} to be idle", timeout, interval=0.3)
