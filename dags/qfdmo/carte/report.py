"""The compute_acteurs run report: what the carte computation produced and what the swap wrote,
for the task log and `$QFDMO_DATA_DIR/reports/compute_acteurs/<run_id>.json`."""

from __future__ import annotations

from typing import Any

import psycopg

from qfdmo.carte.dbt_runner import SCHEMA


def _pairs(conn: psycopg.Connection, query: str) -> dict[str, int]:
    return {str(key): int(count) for key, count in conn.execute(query)}


def build_statistics(conn: psycopg.Connection) -> dict[str, Any]:
    """Counts from the models of the last build (schema qfdmo_carte)."""
    s = SCHEMA
    parents = conn.execute(
        f"SELECT count(*) FILTER (WHERE est_parent), count(*) FILTER (WHERE est_parent AND est_dans_carte),"
        f" count(*) FILTER (WHERE est_enfant), count(*) FILTER (WHERE est_enfant AND statut = 'ACTIF')"
        f" FROM {s}.int_acteur_affichage").fetchone() or (0, 0, 0, 0)
    return {
        "displayed_by_source": _pairs(conn,
            f"SELECT coalesce(src.code, '(none)'), count(DISTINCT x.displayedacteur_id)"
            f" FROM {s}.carte_acteur_sources x JOIN qfdmo_source src ON src.id = x.source_id"
            f" GROUP BY 1 ORDER BY 2 DESC, 1"),
        "displayed_by_acteur_type": _pairs(conn,
            f"SELECT t.code, count(*) FROM {s}.carte_acteur a JOIN qfdmo_acteurtype t ON t.id = a.acteur_type_id"
            f" GROUP BY 1 ORDER BY 2 DESC, 1"),
        "parents": {"total": parents[0], "displayed": parents[1], "children": parents[2],
                    "active_children": parents[3]},
        "excluded_by_reason": _pairs(conn,
            f"SELECT raison_hors_carte, count(*) FROM {s}.int_acteur_affichage"
            f" WHERE raison_hors_carte IS NOT NULL AND raison_hors_carte <> 'enfant' GROUP BY 1 ORDER BY 1"),
        "orphans_by_reason": _pairs(conn,
            f"SELECT lien_invalide, count(*) FROM {s}.int_liens_parent WHERE lien_invalide IS NOT NULL"
            f" GROUP BY 1 ORDER BY 1"),
        # The rows opendata_acteur will have (export_opendata builds it): one per unit in the open data.
        "opendata_rows": int((conn.execute(f"SELECT count(*) FILTER (WHERE est_dans_opendata)"
                                           f" FROM {s}.int_acteur_affichage").fetchone() or (0,))[0]),
    }


def build_report(*, dag_id: str, run_id: str, steps: dict[str, dict[str, Any] | None],
                 statistics: dict[str, Any] | None, outcome: str) -> dict[str, Any]:
    built = steps.get("build") or {}
    swapped = steps.get("swap") or {}
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "outcome": outcome,
        "dbt": {k: built.get(k) for k in ("success", "models", "tests", "failures")} if built else None,
        "guard": swapped.get("guard") or (steps.get("guard") or {}).get("guard"),
        "rows_before": swapped.get("rows_before"),
        "rows_after": swapped.get("rows_after"),
        "rows_written": swapped.get("rows_written"),
        "lock_window_s": swapped.get("lock_window_s"),
        "statistics": statistics,
        "seconds": {
            "dbt_models": built.get("models_seconds"),
            "dbt_tests": built.get("tests_seconds"),
            "build": built.get("seconds"),
            "swap": swapped.get("seconds"),
        },
    }


def to_text(report: dict[str, Any]) -> str:
    lines = [f"Carte report {report['dag_id']} / {report['run_id']}", f"  OUTCOME: {report['outcome'].upper()}"]
    guard = report.get("guard") or {}
    if guard:
        lines.append(f"  guard: displayed {guard.get('displayed_current')} -> {guard.get('displayed_new')}"
                     f" (drop {guard.get('drop_share', 0):.1%}, max {guard.get('max_drop_share', 0):.1%})"
                     f"{' -> approval needed' if guard.get('needs_approval') else ''}")
    before, after = report.get("rows_before") or {}, report.get("rows_after") or {}
    written = report.get("rows_written") or {}
    if before:
        lines.append("  rows per table (before -> after; deleted/updated/inserted):")
        for table in before:
            w = written.get(table, {})
            lines.append(f"    {table:<52} {before[table]:>9} -> {after.get(table, '-'):>9}"
                         f"   -{w.get('deleted', 0)} ~{w.get('updated', 0)} +{w.get('inserted', 0)}")
    stats = report.get("statistics") or {}
    for title, key in (("displayed per source", "displayed_by_source"), ("displayed per acteur type",
                       "displayed_by_acteur_type"), ("excluded by reason", "excluded_by_reason"),
                       ("orphans (invalid parent link) by reason", "orphans_by_reason")):
        if stats.get(key):
            lines.append(f"  {title}: " + ", ".join(f"{k}={v}" for k, v in stats[key].items()))
    if stats.get("parents"):
        lines.append("  parents: " + ", ".join(f"{k}={v}" for k, v in stats["parents"].items()))
    if "opendata_rows" in stats:
        lines.append(f"  open-data rows: {stats['opendata_rows']}")
    if report.get("lock_window_s") is not None:
        lines.append(f"  swap: write-lock window {report['lock_window_s']} s (row locks: readers never wait)")
    lines.append("  seconds: " + ", ".join(f"{k}={v}" for k, v in report["seconds"].items() if v is not None))
    return "\n".join(lines)
