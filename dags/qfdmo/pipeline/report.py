"""The run report: what a source run did, in numbers, for the task log, the approval form and
`$QFDMO_DATA_DIR/reports/<dag_id>/<run_id>.json`.

Built from the typed results the steps returned (qfdmo.pipeline.results.RunResults). The JSON
shape is the contract with whoever reads the reports (tests, people, the approval form).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qfdmo.pipeline.results import Diff, Normalised, RunResults

APPLIED = "applied"
UNCHANGED = "unchanged"
REJECTED = "not applied: rejected"
TIMED_OUT = "not applied: timed out"
FAILED = "not applied: failed"
NOT_APPLIED = "not applied"
# Outcomes a run reaches by design (its working files are no longer needed).
SETTLED_OUTCOMES = (APPLIED, UNCHANGED, REJECTED, TIMED_OUT)
# What the fast path does not run when the feed is unchanged.
SKIPPED_WHEN_UNCHANGED = ("normalise", "stage", "guard", "apply")


@dataclass(frozen=True)
class Approval:
    """What the approval task returned (None when no approval was asked)."""

    chosen: str  # "Approve" / "Reject"
    responded_by: str | None  # None: the timeout chose the default
    timed_out: bool = False

    @classmethod
    def from_xcom(cls, value: Any) -> Approval | None:
        """From the approval task's `decision` XCom (chosen_options, responded_by_user, timed_out)."""
        if not isinstance(value, dict) or not value.get("chosen_options"):
            return None
        user = value.get("responded_by_user")
        name = (user.get("name") or user.get("id")) if isinstance(user, dict) else user
        return cls(chosen=value["chosen_options"][0], responded_by=name or None,
                   timed_out=bool(value.get("timed_out")) or not name)


def outcome(results: RunResults, approval: Approval | None, failed_step: str | None = None) -> str:
    """One of APPLIED / UNCHANGED / REJECTED / TIMED_OUT / FAILED (with the step) / NOT_APPLIED."""
    if results.applied is not None:
        return APPLIED
    if results.unchanged:
        return UNCHANGED
    if approval is not None and approval.chosen != "Approve":
        return TIMED_OUT if approval.timed_out else REJECTED
    if failed_step:
        return f"{FAILED} at {failed_step}"
    return NOT_APPLIED


def _unchanged_diff(results: RunResults) -> Diff | None:
    """The diff an unchanged feed gives: every acteur unchanged (INACTIF ones kept), nothing to do."""
    checked = results.checked
    if checked is None or checked.previous is None:
        return None
    previous = checked.previous
    return Diff(new=0, changed=0, unchanged=previous.acteurs - previous.inactive, inactive=previous.inactive,
                to_deactivate=0, active_before=checked.active, deactivation_share=0.0)


def build_report(
    *,
    dag_id: str,
    run_id: str,
    source: str,
    results: RunResults,
    approval: Approval | None = None,
    failed_step: str | None = None,
    approval_timeout: float | None = None,
) -> dict[str, Any]:
    download, staged, applied = results.downloaded, results.staged, results.applied
    previous = results.checked.previous if results.unchanged and results.checked else None
    # An unchanged run reports the counts of the last applied run (identical inputs give identical counts).
    normalised: Normalised | None = results.normalised or (previous.normalised if previous else None)
    # The apply transaction recomputes the diff; it is the truth when present.
    diff = applied.diff if applied else staged.diff if staged else _unchanged_diff(results)
    d = diff.to_dict() if diff else {}
    result = outcome(results, approval, failed_step)
    report: dict[str, Any] = {
        "dag_id": dag_id,
        "run_id": run_id,
        "source": source,
        "outcome": result,
        "applied": result == APPLIED,
        "feed": {k: getattr(download, k) for k in ("url", "pages", "total", "requests", "retries")}
        if download else None,
        "counts": {
            "rows_read": normalised.rows_read if normalised else None,
            "rejected": normalised.rows_rejected if normalised else None,
            "acteurs": staged.acteurs if staged else previous.acteurs if previous else None,
            "duplicates_merged": staged.duplicates_merged if staged else previous.duplicates_merged
            if previous else None,
            "new": d.get("new"),
            "changed": d.get("changed"),
            "unchanged": d.get("unchanged"),
            "deactivated" if result == APPLIED else "to_deactivate": d.get("to_deactivate"),
            "inactive_kept": d.get("inactive"),
            "rows_written": applied.total_rows_written if applied else 0,
        },
        "rows_written_by_table": applied.rows_written if applied else {},
        "guard": {
            "active_before": d.get("active_before"),
            "to_deactivate": d.get("to_deactivate"),
            "deactivation_share": d.get("deactivation_share"),
            "max_deactivation_share": staged.max_deactivation_share if staged else None,
            "needs_approval": staged.needs_approval if staged else (False if previous else None),
            "approval": None
            if approval is None
            else {
                "chosen": approval.chosen,
                "responded_by": approval.responded_by,
                "timed_out": approval.timed_out,
                "timeout_s": approval_timeout,
            },
        },
        "normalise_processes": results.normalised.processes if results.normalised else None,
        "rejections": normalised.rejections if normalised else {},
        "rejection_examples": normalised.rejection_examples if normalised else {},
        "unknown_values": normalised.unknown_values if normalised else {},
        "warnings": normalised.warnings if normalised else {},
        "diff_examples": d.get("examples", {}),
        "seconds": {
            name: seconds
            for name, seconds in (
                ("download", download.seconds if download else None),
                ("check_feed", results.checked.seconds if results.checked else None),
                ("normalise", results.normalised.seconds if results.normalised else None),
                ("stage", staged.seconds_total if staged else None),
                ("apply", applied.seconds_total if applied else None),
            )
            if seconds is not None
        },
    }
    if results.checked is not None:
        report["feed_check"] = {"unchanged": results.checked.unchanged, "reason": results.checked.reason}
    if previous is not None and results.checked is not None:
        # Nothing was normalised, staged or applied; the counts are the last applied run's.
        report["skipped"] = {"steps": list(SKIPPED_WHEN_UNCHANGED), "reason": results.checked.reason,
                             "last_applied_at": results.checked.applied_at}
    if failed_step:
        report["failed_step"] = failed_step
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1%}" if value <= 1 else f"{value:.1f}"
    return str(value)


def to_text(report: dict[str, Any]) -> str:
    """A readable summary for the task log."""
    counts, guard = report["counts"], report["guard"]
    lines = [
        f"Run report {report['dag_id']} / {report['run_id']}",
        f"  OUTCOME: {report['outcome'].upper()}"
        + (f" ({report['skipped']['reason']}: {', '.join(report['skipped']['steps'])} skipped; counts of the run"
           f" applied at {report['skipped']['last_applied_at']})" if report.get("skipped") else ""),
    ]
    if report.get("feed"):
        feed = report["feed"]
        lines.append(
            f"  feed: {feed['url']} ({_fmt(feed['total'])} rows announced, {feed['pages']} pages, "
            f"{feed['retries']} retries)"
        )
    lines.append("  counts: " + ", ".join(f"{k}={_fmt(v)}" for k, v in counts.items()))
    share = guard.get("deactivation_share")
    lines.append(
        f"  guard: {_fmt(guard.get('to_deactivate'))} of {_fmt(guard.get('active_before'))} ACTIF acteurs would leave "
        f"(share {_fmt(share)}, max {_fmt(guard.get('max_deactivation_share'))}) -> "
        f"{'approval needed' if guard.get('needs_approval') else 'no approval needed'}"
    )
    if guard.get("approval"):
        approval = guard["approval"]
        who = approval["responded_by"] or f"nobody within {_fmt(approval.get('timeout_s'))} s (default)"
        lines.append(f"  approval: {approval['chosen']} by {who}")
    for title, key in (("rejected rows by reason", "rejections"), ("warnings", "warnings")):
        if report.get(key):
            lines.append(f"  {title}:")
            lines += [f"    {n:>7}  {reason}" for reason, n in report[key].items()]
    if report.get("rejection_examples"):
        lines.append("  examples of rejected rows:")
        for reason, examples in report["rejection_examples"].items():
            for example in examples[:3]:
                where = f"row {example.get('row')} {example.get('identifier')}"
                lines.append(f"    [{reason}] {where}: {example.get('value')}")
    for kind, values in (report.get("unknown_values") or {}).items():
        lines.append(f"  unknown {kind}: " + ", ".join(f"{v!r} x{n}" for v, n in values.items()))
    if report.get("seconds"):
        lines.append("  seconds: " + ", ".join(f"{k}={v}" for k, v in report["seconds"].items()))
    return "\n".join(lines)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as the approval form shows it."""
    counts, guard = report["counts"], report["guard"]
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in counts.items())
    parts = [
        f"**{guard.get('to_deactivate')} of {guard.get('active_before')} ACTIF acteurs** of source "
        f"`{report['source']}` would be set **SUPPRIME** (share {_fmt(guard.get('deactivation_share'))}, "
        f"threshold {_fmt(guard.get('max_deactivation_share'))}).",
        "Approve to apply the whole run; Reject (or no answer before the timeout) applies nothing.",
        f"| count | value |\n|---|---|\n{rows}",
    ]
    examples = (report.get("diff_examples") or {}).get("to_deactivate")
    if examples:
        parts.append("Examples leaving the feed: " + ", ".join(f"`{e}`" for e in examples))
    if report.get("rejections"):
        parts.append(
            "Rejected rows: " + ", ".join(f"{reason} ({n})" for reason, n in report["rejections"].items())
        )
    if report.get("feed"):
        parts.append(f"Feed: {report['feed']['url']}")
    return "\n\n".join(parts)


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
