"""Which step made a source run fail, and whether the run's files are kept: the decisions the
report and the cleanup take from the steps' results, without Airflow running."""

from __future__ import annotations

import dataclasses

import pytest
from qfdmo.airflow.source_tasks import APPROVAL, CHECK_FEED, STAGE, failed_step
from qfdmo.pipeline import (
    SETTLED_OUTCOMES,
    AppliedFeed,
    Approval,
    Downloaded,
    FeedCheck,
    Normalised,
    RunResults,
    Staged,
    outcome,
)

DIFF = {"new": 1, "changed": 0, "unchanged": 0, "inactive": 0, "to_deactivate": 0, "active_before": 0,
        "deactivation_share": 0.0}


def _staged(needs_approval: bool) -> Staged:
    return Staged.from_dict({"run_key": "k", "rows": {}, "acteurs": 1, "duplicates_merged": 0, "diff": DIFF,
                             "seconds": {}, "max_deactivation_share": 0.1, "needs_approval": needs_approval,
                             "seconds_total": 0.0})


def _done(needs_approval: bool = False) -> RunResults:
    from qfdmo.pipeline import Applied

    return RunResults(
        downloaded=Downloaded(url="u", feed_sha256="f", pages=1, total=1, bytes=1, requests=1, retries=0,
                              seconds=0.0),
        checked=FeedCheck(fingerprint="f", unchanged=False, reason="new input: full path"),
        normalised=Normalised(rows_read=1, acteurs_written=1),
        staged=_staged(needs_approval),
        applied=Applied.from_dict({"diff": DIFF, "rows_written": {"qfdmo_acteur": 1}, "total_rows_written": 1,
                                   "seconds": 0.0}),
    )


def _without(results: RunResults, first_missing: str) -> RunResults:
    """The results as they are when `first_missing` did not succeed (nor anything after it ran)."""
    names = [field.name for field in dataclasses.fields(RunResults)]
    return dataclasses.replace(results, **{name: None for name in names[names.index(first_missing):]})


@pytest.mark.parametrize(
    ("missing", "chosen", "needs_approval", "expected"),
    [
        (None, None, False, None),  # applied
        ("downloaded", None, False, "download"),
        ("checked", None, False, CHECK_FEED),
        ("normalised", None, False, "normalise"),
        ("staged", None, False, STAGE),  # reported under its task id
        ("applied", None, False, "apply"),  # apply itself failed
        ("applied", "Reject", True, None),  # a person (or the timeout) said no: not a failure
        ("applied", None, True, APPROVAL),  # the approval task failed before any answer
        ("applied", "Approve", True, "apply"),  # approved, then apply failed
    ],
)
def test_failed_step(missing, chosen, needs_approval, expected):
    results = _done(needs_approval)
    if missing:
        results = _without(results, missing)
    assert failed_step(results, chosen) == expected


def test_unchanged_feed_is_settled_not_failed():
    previous = AppliedFeed(normalised=Normalised(rows_read=1, acteurs_written=1), rows={}, acteurs=1,
                           duplicates_merged=0, inactive=0)
    unchanged = RunResults(
        downloaded=_done().downloaded,
        checked=FeedCheck(fingerprint="f", unchanged=True, reason="unchanged feed: nothing to do",
                          previous=previous, active=1),
    )
    assert failed_step(unchanged, None) is None
    assert outcome(unchanged, None) == "unchanged" and "unchanged" in SETTLED_OUTCOMES


@pytest.mark.parametrize(
    ("results", "answer", "settled"),
    [
        (_done(), None, True),
        (_done(True), Approval("Reject", "someone"), True),
        (_done(True), Approval("Reject", None, timed_out=True), True),
        (_without(_done(), "normalised"), None, False),  # failed: files kept for diagnosis
        (_without(_done(True), "applied"), None, False),  # the approval task failed
    ],
)
def test_cleanup_keeps_the_files_of_failed_runs_only(results, answer, settled):
    chosen = answer.chosen if answer else None
    assert (outcome(results, answer, failed_step(results, chosen)) in SETTLED_OUTCOMES) is settled
