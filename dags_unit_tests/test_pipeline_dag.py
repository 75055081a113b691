"""dags/sources.py builds one well-formed DAG per declaration (structure only; runs are in the e2e tests)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from qfdmo.airflow.assets import CARTE_ACTEURS
from qfdmo.sources import load_declarations

from devstack.config import REPO_ROOT


@pytest.fixture(scope="module")
def dags():
    module = importlib.import_module("sources")
    return {name: value for name, value in vars(module).items() if name.startswith("source_")}


def test_one_dag_per_declaration(dags):
    assert set(dags) == {d.dag_id for d in load_declarations().values()}


def test_dag_shape_params_and_guard(dags):
    dag = dags["source_refashion"]
    assert dag.schedule is None and dag.max_active_runs == 1
    assert dag.params["endpoint_url"] == load_declarations()["refashion"].feed_url
    assert dag.params["max_deactivation_share"] == 0.1 and dag.params["approval_timeout"] == 86_400
    tasks = dag.task_dict
    assert set(tasks) == {"download", "check_feed", "normalise", "stage_and_diff", "guard", "request_approval",
                          "apply", "announce_change", "report", "cleanup"}
    assert tasks["download"].downstream_task_ids == {"check_feed"}
    assert tasks["check_feed"].downstream_task_ids == {"normalise"}
    assert tasks["guard"].downstream_task_ids == {"request_approval", "apply"}
    assert tasks["request_approval"].downstream_task_ids == {"apply"}
    assert tasks["apply"].trigger_rule == "none_failed_min_one_success"
    assert tasks["apply"].downstream_task_ids == {"announce_change", "report"}
    assert tasks["report"].trigger_rule == "all_done"
    approval = tasks["request_approval"]
    assert isinstance(approval, ApprovalOperator) and approval.defaults == ["Reject"]
    assert dag.default_args["retries"] == 1 and dag.owner == "qfdmo-data"


def test_unchanged_feed_short_circuits_only_the_work(dags):
    """The short-circuit skips normalise; the trigger rules skip stage..apply and announce_change
    (no asset event) but still run the report; the cleanup is a teardown: it runs whatever happened
    and does not decide the run's state."""
    tasks = dags["source_refashion"].task_dict
    check = tasks["check_feed"]
    assert isinstance(check, ShortCircuitOperator) and check.ignore_downstream_trigger_rules is False
    assert tasks["announce_change"].outlets == [CARTE_ACTEURS]
    assert tasks["announce_change"].trigger_rule == "all_success"
    assert all(not task.outlets for name, task in tasks.items() if name != "announce_change")
    cleanup = tasks["cleanup"]
    assert cleanup.is_teardown and not cleanup.on_failure_fail_dagrun
    assert cleanup.upstream_task_ids == {"announce_change", "report"} and not cleanup.downstream_task_ids
    assert all(not task.is_teardown for name, task in tasks.items() if name != "cleanup")


def test_dag_file_defers_heavy_imports_to_tasks():
    # A fresh interpreter with Airflow already imported, as the DAG processor has it. Wall time is
    # only printed (shared CI machines are too noisy for a threshold); what is imported is checked.
    code = (
        "import sys, time, airflow.sdk, airflow.providers.standard.operators.hitl\n"
        "started = time.perf_counter()\n"
        "import sources\n"
        "print(time.perf_counter() - started)\n"
        "print(sorted(m for m in ('qfdmo.pipeline', 'qfdmo.feeds', 'requests') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT / "dags", capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO_ROOT / "dags"), "PATH": "/usr/bin:/bin", "AIRFLOW_HOME": "/tmp/qfdmo-dag-import"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, loaded = result.stdout.strip().splitlines()[-2:]
    print(f"sources.py import: {float(seconds):.2f} s")
    assert "qfdmo.pipeline" not in loaded and "qfdmo.feeds" not in loaded
