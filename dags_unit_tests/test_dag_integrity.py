"""Every DAG file imports cleanly, fast, without a database or the network, and is well described."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devstack.config import REPO_ROOT


@pytest.fixture(scope="module")
def dag_report() -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "devstack.dag_check", str(REPO_ROOT / "dags")],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_every_dag_file_imports_without_database_or_network(dag_report):
    assert dag_report["import_errors"] == {}
    assert dag_report["files"], "no DAG file found"


def test_expected_dags_are_defined(dag_report):
    dag_ids = set(dag_report["dags"])
    assert "download_dags_from_s3" in dag_ids
    assert {"source_refashion", "source_ocab", "source_cma_reparacteur", "source_ademesinoedecheteries"} <= dag_ids


def test_every_dag_has_owner_tags_description_and_retries(dag_report):
    problems = []
    for dag_id, dag in dag_report["dags"].items():
        if not dag["owner"] or dag["owner"] == "airflow":
            problems.append(f"{dag_id}: owner missing (default 'airflow')")
        if not dag["tags"]:
            problems.append(f"{dag_id}: no tags")
        if not dag["description"]:
            problems.append(f"{dag_id}: no description")
        if not dag["default_retries"]:
            problems.append(f"{dag_id}: no retries in default_args")
    assert not problems, "\n".join(problems)
