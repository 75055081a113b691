"""Where a run's working files and report live, and the key of its staging tables."""

from __future__ import annotations

import re
from pathlib import Path

from qfdmo.settings import settings


def data_dir() -> Path:
    return settings().data_dir


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
