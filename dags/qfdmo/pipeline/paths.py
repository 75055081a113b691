"""Where a run's working files and report live, and the key of its staging tables."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_DATA_DIR = "/opt/airflow/data"  # the containers' volume; the local stack sets QFDMO_DATA_DIR


def data_dir() -> Path:
    return Path(os.environ.get("QFDMO_DATA_DIR") or DEFAULT_DATA_DIR)


def _safe(part: str) -> str:
    # Run ids hold ':' and '+' (timestamps); keep file names portable and free of '/'.
    return re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "_"


def run_dir(dag_id: str, run_id: str, base: Path | None = None) -> Path:
    """`$QFDMO_DATA_DIR/runs/<dag_id>/<run_id>/`: raw feed and normalised files of one run."""
    return (base or data_dir()) / "runs" / _safe(dag_id) / _safe(run_id)


def report_path(dag_id: str, run_id: str, base: Path | None = None) -> Path:
    """`$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`: the run report, kept after the run."""
    return (base or data_dir()) / "reports" / _safe(dag_id) / f"{_safe(run_id)}.json"


def run_key(dag_id: str, run_id: str) -> str:
    """Names the run's staging tables (the carte DB shortens it to a safe identifier)."""
    return f"{dag_id}__{run_id}"
