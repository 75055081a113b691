"""The steps a source DAG runs, as plain functions (dags/sources.py only wires them)."""

from qfdmo.pipeline.paths import data_dir, report_path, run_dir, run_key
from qfdmo.pipeline.report import (
    APPLIED,
    REJECTED,
    SETTLED_OUTCOMES,
    TIMED_OUT,
    Approval,
    build_report,
    outcome,
    to_markdown,
    to_text,
    write_report,
)
from qfdmo.pipeline.steps import PipelineError, apply, download, finish, needs_approval, normalise, stage

__all__ = [
    "APPLIED",
    "REJECTED",
    "TIMED_OUT",
    "SETTLED_OUTCOMES",
    "Approval",
    "PipelineError",
    "apply",
    "build_report",
    "data_dir",
    "download",
    "finish",
    "needs_approval",
    "normalise",
    "outcome",
    "report_path",
    "run_dir",
    "run_key",
    "stage",
    "to_markdown",
    "to_text",
    "write_report",
]
