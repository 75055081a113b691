"""What stage(), diff() and apply() return, and the error of a run that cannot be applied."""

from __future__ import annotations

from dataclasses import dataclass, field


class StagingError(RuntimeError):
    """The run files cannot be applied as they are (nothing was written to qfdmo tables)."""


@dataclass(frozen=True)
class DiffResult:
    new: int
    changed: int
    unchanged: int
    inactive: int
    to_deactivate: int
    active_before: int
    examples: dict[str, list[str]] = field(default_factory=dict)
    # For changed acteurs: how many differ on each column ("sets" = propositions, labels or
    # services; "reactivated" = SUPPRIME in the database).
    changed_columns: dict[str, int] = field(default_factory=dict)

    @property
    def deactivation_share(self) -> float:
        """Share of the sources' ACTIF acteurs that this run would set SUPPRIME."""
        return self.to_deactivate / self.active_before if self.active_before else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "inactive": self.inactive,
            "to_deactivate": self.to_deactivate,
            "active_before": self.active_before,
            "deactivation_share": round(self.deactivation_share, 4),
            "examples": self.examples,
            "changed_columns": self.changed_columns,
        }


@dataclass(frozen=True)
class StageResult:
    run_key: str
    rows: dict[str, int]  # lines read per file
    acteurs: int  # distinct identifiant_unique
    duplicates_merged: int  # acteur lines merged into another one
    diff: DiffResult
    seconds: dict[str, float]  # load, check, diff
    # Where the time went, statement by statement, named "<work>: <statement>" (the acteurs' and the
    # propositions' work run side by side on two connections: their seconds overlap).
    statement_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "run_key": self.run_key,
            "rows": self.rows,
            "acteurs": self.acteurs,
            "duplicates_merged": self.duplicates_merged,
            "diff": self.diff.as_dict(),
            "seconds": self.seconds,
            "statement_seconds": self.statement_seconds,
        }


@dataclass(frozen=True)
class ApplyResult:
    diff: DiffResult  # recomputed inside the apply transaction
    rows_written: dict[str, int]  # table -> rows inserted/updated/deleted
    seconds: float
    # Where the time went, statement by statement (the commit, deferred checks included, last).
    statement_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows_written(self) -> int:
        return sum(self.rows_written.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "diff": self.diff.as_dict(),
            "rows_written": self.rows_written,
            "total_rows_written": self.total_rows_written,
            "seconds": round(self.seconds, 3),
            "statement_seconds": {k: round(v, 3) for k, v in self.statement_seconds.items()},
        }
