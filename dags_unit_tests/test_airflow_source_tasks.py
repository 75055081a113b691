"""Which step made a source run fail: the report's decision, without Airflow running."""

from __future__ import annotations

import pytest
from qfdmo.airflow.source_tasks import APPROVAL, STAGE, failed_step

DONE = {"download": {}, "normalise": {}, "stage": {"needs_approval": False}, "apply": {}}


@pytest.mark.parametrize(
    ("missing", "chosen", "needs_approval", "expected"),
    [
        (None, None, False, None),  # applied
        ("download", None, False, "download"),
        ("normalise", None, False, "normalise"),
        ("stage", None, False, STAGE),  # reported under its task id
        ("apply", None, False, "apply"),  # apply itself failed
        ("apply", "Reject", True, None),  # a person (or the timeout) said no: not a failure
        ("apply", None, True, APPROVAL),  # the approval task failed before any answer
        ("apply", "Approve", True, "apply"),  # approved, then apply failed
    ],
)
def test_failed_step(missing, chosen, needs_approval, expected):
    results = {name: (None if name == missing else value) for name, value in DONE.items()}
    if missing == "stage":  # the steps after a failed one did not run either
        results["apply"] = None
    assert failed_step(results, chosen, needs_approval) == expected
