"""A clustering run end to end: read -> normalise -> block and score -> cluster -> suggestions
written (nothing with dry_run), with its report (counts, cluster sizes, time per step)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from qfdmo.dedup import carte
from qfdmo.dedup.clusters import PARENT_FIELDS, Member, cluster, suggestion_for
from qfdmo.dedup.features import normalise_sql
from qfdmo.dedup.matching import match
from qfdmo.dedup.params import ClusteringParams

# DuckDB's share of the machine: the run's peak memory target is 3 GB.
DUCKDB_MEMORY_LIMIT = "1500MB"
DUCKDB_THREADS = 2


def load_csv(con: duckdb.DuckDBPyConnection, acteurs_csv: Path, children_csv: Path) -> None:
    """Tables raw (with `sources`: an orphan's source, a parent's ACTIF children's) and children."""
    types = ", ".join(f"'{name}': '{kind}'" for name, kind in carte.READ_COLUMNS.items())
    con.execute(f"CREATE OR REPLACE TABLE loaded AS SELECT * FROM read_csv('{acteurs_csv}', header = true,"
                f" columns = {{{types}}}, quote = '\"', escape = '\"', nullstr = '')")
    con.execute(f"CREATE OR REPLACE TABLE children AS SELECT * FROM read_csv('{children_csv}', header = true,"
                " columns = {'identifiant_unique': 'VARCHAR', 'parent_id': 'VARCHAR', 'statut': 'VARCHAR',"
                " 'source_id': 'INTEGER'})")
    con.execute("""
        CREATE OR REPLACE TABLE raw AS
        SELECT l.*,
               CASE WHEN l.est_parent THEN coalesce(s.sources, [])
                    ELSE list_filter([l.source_id], lambda x: x IS NOT NULL) END AS sources
        FROM loaded l
        LEFT JOIN (SELECT parent_id, list_distinct(list(source_id)) AS sources FROM children
                   WHERE statut = 'ACTIF' AND source_id IS NOT NULL GROUP BY parent_id) s
               ON s.parent_id = l.identifiant_unique
    """)
    con.execute("DROP TABLE loaded")


def members_of(con: duckdb.DuckDBPyConnection, identifiants: set[str]) -> dict[str, Member]:
    """The raw rows (and children) of the acteurs that some pair names."""
    con.execute("CREATE OR REPLACE TEMP TABLE wanted (identifiant_unique VARCHAR)")
    con.execute("INSERT INTO wanted SELECT unnest(?::VARCHAR[])", [sorted(identifiants)])
    data_columns = [c for c in carte.READ_COLUMNS if c in PARENT_FIELDS or c in ("adresse_complement",)]
    rows = con.execute(
        f"SELECT r.identifiant_unique, r.est_parent, r.source_id, {', '.join('r.' + c for c in data_columns)}"
        " FROM raw r JOIN wanted USING (identifiant_unique)"
    ).fetchall()
    members = {
        row[0]: Member(identifiant_unique=row[0], est_parent=bool(row[1]), source_id=row[2],
                       data=dict(zip(data_columns, row[3:], strict=True)))
        for row in rows
    }
    for child, parent_id, statut, source_id in con.execute(
        "SELECT c.identifiant_unique, c.parent_id, c.statut, c.source_id FROM children c"
        " JOIN wanted w ON w.identifiant_unique = c.parent_id ORDER BY 1"
    ).fetchall():
        members[parent_id].children.append((child, statut, source_id))
    return members


def run_clustering(
    dsn: str, params: ClusteringParams, *, dag_id: str, run_id: str, work_dir: Path | None = None
) -> dict[str, Any]:
    """Runs one clustering; returns the report (the suggestions are in the database unless dry_run)."""
    seconds: dict[str, float] = {}
    started_run = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="dedup-", dir=work_dir))
    try:
        started = time.perf_counter()
        read = carte.read_members(dsn, params, folder)
        priority = carte.source_ids_by_code(dsn, params.source_priority)
        seconds["read"] = round(time.perf_counter() - started, 2)

        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'; SET threads = {DUCKDB_THREADS};"
                    f" SET temp_directory = '{folder / 'duckdb_tmp'}'; SET preserve_insertion_order = false")
        started = time.perf_counter()
        load_csv(con, read.acteurs_csv, read.children_csv)
        con.execute(normalise_sql())
        seconds["normalise"] = round(time.perf_counter() - started, 2)

        matched = match(con, params)
        seconds.update({f"match_{k}": v for k, v in matched.seconds.items()})

        started = time.perf_counter()
        ids = {p["a"] for p in matched.pairs} | {p["b"] for p in matched.pairs}
        members = members_of(con, ids)
        con.close()
        outcome = cluster(members, matched.pairs, intra_source=params.intra_source, rejected=read.rejected_pairs)
        proposals = [suggestion_for(c, members, priority) for c in outcome.clusters]
        seconds["cluster"] = round(time.perf_counter() - started, 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    sizes = Counter(len(c.members) for c in outcome.clusters)
    kept = sum(1 for p in proposals if p["suggestion"]["changes"][0]["model_name"] == "acteur_keep_as_parent")
    acteurs_in_clusters = sum(
        len(members[i].active_children) if members[i].est_parent else 1 for c in outcome.clusters for i in c.members
    )
    counts = {
        "acteurs_read": read.acteurs,
        "children_read": read.children,
        "without_location": read.without_location,
        "without_code_postal": read.without_code_postal,
        "skipped_already_proposed": read.skipped_already_proposed,
        "skipped_not_recomputed": read.skipped_not_recomputed,
        "rejected_pairs_known": len(read.rejected_pairs),
        "candidate_pairs": matched.compared_pairs,
        "pairs_above_threshold": len(matched.pairs) + matched.too_far,
        "pairs_too_far": matched.too_far,
        "merges_refused_same_source": outcome.refused_same_source,
        "merges_refused_rejected_before": outcome.refused_rejected,
        "clusters": len(outcome.clusters),
        "acteurs_in_clusters": acteurs_in_clusters,
        "new_parents": len(proposals) - kept,
        "kept_parents": kept,
        "parents_deleted": sum(
            1 for p in proposals for ch in p["suggestion"]["changes"] if ch["model_name"] == "acteur_delete_as_parent"
        ),
    }
    metadata = {
        **counts,
        "cluster_sizes": {str(k): v for k, v in sorted(sizes.items())},
        "match_threshold": params.match_threshold,
        "params": params.model_dump(),
        "large_blocks_skipped": matched.large_block_count,
        "large_blocks_examples": matched.large_blocks,
    }
    cohorte_id = None
    if not params.dry_run and proposals:
        started = time.perf_counter()
        for proposal in proposals:
            proposal["metadata"] = {"cluster_size": len(proposal["contexte"]["members"])}
        cohorte_id, _ = carte.write_suggestions(dsn, dag_id=dag_id, run_id=run_id, metadata=metadata,
                                                suggestions=proposals)
        seconds["write"] = round(time.perf_counter() - started, 2)
    seconds["total"] = round(time.perf_counter() - started_run, 2)
    return {
        "dag_id": dag_id, "run_id": run_id, "dry_run": params.dry_run, "cohorte_id": cohorte_id,
        "suggestions_written": 0 if cohorte_id is None else len(proposals),
        **metadata, "seconds": seconds,
        "examples": [p["suggestion"]["title"] for p in proposals[:5]],
    }


def to_text(report: dict[str, Any]) -> str:
    """The report for the task log."""
    lines = [f"Clustering report {report['dag_id']} / {report['run_id']}"
             + (" (DRY RUN: nothing written)" if report["dry_run"] else "")]
    keys = ("acteurs_read", "children_read", "without_location", "without_code_postal", "skipped_already_proposed",
            "skipped_not_recomputed", "rejected_pairs_known", "candidate_pairs", "pairs_above_threshold",
            "pairs_too_far", "merges_refused_same_source", "merges_refused_rejected_before", "clusters",
            "acteurs_in_clusters", "new_parents", "kept_parents", "parents_deleted", "suggestions_written")
    lines.append("  counts: " + ", ".join(f"{k}={report[k]}" for k in keys))
    lines.append(f"  threshold: {report['match_threshold']}; cluster sizes: {json.dumps(report['cluster_sizes'])}")
    if report["large_blocks_skipped"]:
        lines.append(f"  blocks too large (> {report['params']['max_block_size']}), not used: "
                     f"{json.dumps(report['large_blocks_skipped'])} e.g. {json.dumps(report['large_blocks_examples'])}")
    lines.append("  seconds: " + ", ".join(f"{k}={v}" for k, v in report["seconds"].items()))
    if report["cohorte_id"] is not None:
        lines.append(f"  cohorte {report['cohorte_id']}: {report['suggestions_written']} suggestions AVALIDER")
    for title in report["examples"]:
        lines.append(f"    e.g. {title}")
    return "\n".join(lines)
