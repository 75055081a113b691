"""Local paths of runs that still keep their files on one machine's disk (the reports of the other
DAGs, dbt's scratch), the name rules shared with the run data in S3 (run_data.py), and the key of a
run's staging tables."""

from __future__ import annotations

import re
from pathlib import Path

from qfdmo.settings import settings


def data_dir() -> Path:
    return settings().data_dir


def safe_name(part: str) -> str:
    """A run id (':' and '+' in its timestamp) as a portable file name or S3 key segment without '/'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"


def run_dir(dag_id: str, run_id: str, base: Path | None = None) -> Path:
    """`$QFDMO_DATA_DIR/runs/<dag_id>/<run_id>/`: a run's local folder (the source DAGs keep theirs in
    S3: run_data.py)."""
    return (base or data_dir()) / "runs" / safe_name(dag_id) / safe_name(run_id)


def report_path(dag_id: str, run_id: str, base: Path | None = None) -> Path:
    """`$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`: the run report, kept after the run."""
    return (base or data_dir()) / "reports" / safe_name(dag_id) / f"{safe_name(run_id)}.json"


def run_key(dag_id: str, run_id: str) -> str:
    """Names the run's staging tables (the carte DB shortens it to a safe identifier)."""
    return f"{dag_id}__{run_id}"
