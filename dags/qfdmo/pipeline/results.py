"""What each step of a source run returns, typed.

Steps pass these objects to each other; at an Airflow task boundary they travel through XCom as
JSON-able dicts (`to_dict` / `from_dict`), and the report reads the typed objects back. They hold
counts, timings and references only: bulk data stays in the run's data (S3) and staging tables.
Unknown keys are ignored when reading (a newer count in an older reader is harmless); a missing or
mistyped one is an error, which names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Self:
        return cls.model_validate(value)

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any] | None) -> Self | None:
        """None for a step that did not run or did not succeed (no XCom)."""
        return None if value is None else cls.from_dict(value)


class Downloaded(StepResult):
    url: str  # credentials redacted
    feed_sha256: str  # of the endpoint URL and the feed's rows: another URL is another feed
    pages: int
    total: int | None  # rows the API announced
    bytes: int
    requests: int
    retries: int
    seconds: float


class Normalised(StepResult):
    """The normalisation counts (qfdmo.sources' report, its value lists cut to their most frequent)."""

    rows_read: int
    rows_written: int = 0
    rows_rejected: int = 0
    acteurs_written: int = 0
    propositions_written: int = 0
    labels_written: int = 0
    acteur_services_written: int = 0
    duplicates: int = 0
    processes: int = 1
    rejections: dict[str, int] = {}
    rejection_examples: dict[str, list[dict[str, Any]]] = {}
    warnings: dict[str, int] = {}
    unknown_values: dict[str, dict[str, int]] = {}
    seconds: float = 0.0
    step_seconds: dict[str, float] = {}  # fetch (feed to scratch), normalise, load (COPY into staging)


class AppliedFeed(StepResult):
    """What qfdmo_platform.applied_feed keeps of a source's last applied run, besides its
    fingerprint: enough for an unchanged re-run to report the same counts without running."""

    normalised: Normalised
    rows: dict[str, int]  # lines staged per run file
    acteurs: int
    duplicates_merged: int
    inactive: int  # INACTIF acteurs kept as they were


class FeedCheck(StepResult):
    """The fast-path decision: is the run's input identical to the last applied run's?"""

    fingerprint: str  # of everything that decides what the run writes
    unchanged: bool
    reason: str  # why the run is skipped, or why it takes the full path
    previous: AppliedFeed | None = None  # the last applied run, when unchanged
    active: int = 0  # the source's ACTIF acteurs now, when unchanged
    applied_at: str | None = None  # when that run was applied
    seconds: float = 0.0


class Diff(StepResult):
    """The staged run against qfdmo_acteur (qfdmo.carte_db's DiffResult)."""

    new: int
    changed: int
    unchanged: int
    inactive: int
    to_deactivate: int
    active_before: int
    deactivation_share: float
    examples: dict[str, list[str]] = {}
    changed_columns: dict[str, int] = {}


class Staged(StepResult):
    run_key: str  # names the staging tables
    rows: dict[str, int]
    acteurs: int
    duplicates_merged: int
    diff: Diff
    seconds: dict[str, float]
    statement_seconds: dict[str, float] = {}
    max_deactivation_share: float
    needs_approval: bool
    seconds_total: float


class Applied(StepResult):
    diff: Diff  # recomputed inside the apply transaction: the truth
    rows_written: dict[str, int]
    total_rows_written: int
    seconds: float
    statement_seconds: dict[str, float] = {}
    seconds_total: float = 0.0

    @property
    def wrote_rows(self) -> bool:
        """True when the carte's acteurs (or their relations) changed: what the asset announces."""
        return self.total_rows_written > 0


@dataclass(frozen=True)
class RunResults:
    """What the steps of one run returned; None for a step that did not run or did not succeed."""

    downloaded: Downloaded | None = None
    checked: FeedCheck | None = None
    normalised: Normalised | None = None
    staged: Staged | None = None
    applied: Applied | None = None

    @property
    def unchanged(self) -> bool:
        return self.checked is not None and self.checked.unchanged
