"""apply(): write a staged run into the qfdmo tables in ONE transaction.

Under an advisory lock per source set: recomputes the diff from staging, sets SUPPRIME on acteurs
that left the feed, updates changed acteurs (cree_le kept, modifie_le = now()), inserts new ones,
and replaces propositions de service (+ sous-catégories), labels and acteur_services of
new/changed acteurs only. Unchanged acteurs are not written at all; qfdmo_revisionacteur is never
touched. Columns the feed does not carry (outside staging_format.MANAGED_COLUMNS) are kept. Any
error rolls everything back.

``ApplyResult.rows_written`` counts, per qfdmo table, rows inserted, updated or deleted (replaced
sets count their deletions too): all zeros on an unchanged re-run. When the role may set
``session_replication_role``, per-row foreign key triggers are replaced by set-based guarantees
(see _skip_row_by_row_fk_checks); the schema's constraints themselves (unique, check, not null)
always apply.
"""

from __future__ import annotations

import logging
import time

import psycopg
from psycopg import sql

from qfdmo.carte_db import statements as s
from qfdmo.carte_db.diffing import compute_diff
from qfdmo.carte_db.queries import one_row
from qfdmo.carte_db.results import ApplyResult
from qfdmo.carte_db.run_tables import Laps, SourceCodes, lock_key, run_tables, session_settings
from qfdmo.carte_db.staging_format import MANAGED_COLUMNS

log = logging.getLogger(__name__)

ANALYZE_THRESHOLD = 10_000
# The qfdmo tables a run writes, in dependency order (the keys of ApplyResult.rows_written).
WRITTEN_TABLES = (
    "qfdmo_acteur",
    "qfdmo_propositionservice",
    "qfdmo_propositionservice_sous_categories",
    "qfdmo_acteur_labels",
    "qfdmo_acteur_acteur_services",
)
_STATISTICS_COLUMNS = {
    "qfdmo_acteur": "identifiant_unique, source_id, statut",
    "qfdmo_propositionservice": "id, acteur_id",
    "qfdmo_propositionservice_sous_categories": "propositionservice_id",
    "qfdmo_acteur_labels": "acteur_id",
    "qfdmo_acteur_acteur_services": "acteur_id",
}

# Reference tables our rows point to; their rows are locked (FOR KEY SHARE) when
# row-by-row foreign key checks are skipped, as each check would have done.
_REFERENCED_TABLES = (
    "qfdmo_source",
    "qfdmo_acteurtype",
    "qfdmo_action",
    "qfdmo_souscategorieobjet",
    "qfdmo_labelqualite",
    "qfdmo_acteurservice",
)


def apply(conn: psycopg.Connection, run_key: str, source_codes: SourceCodes) -> ApplyResult:
    """Write the staged run in one transaction (see the module docstring)."""
    t = run_tables(run_key)
    started = time.perf_counter()
    written: dict[str, int] = {}
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in MANAGED_COLUMNS)
    assignments = sql.SQL(", ").join(sql.SQL("{c} = m.{c}").format(c=sql.Identifier(c)) for c in MANAGED_COLUMNS)
    staged_columns = sql.SQL(", ").join(sql.SQL("m.{}").format(sql.Identifier(c)) for c in MANAGED_COLUMNS)
    lap = Laps()
    with conn.transaction(), conn.cursor() as cur:
        session_settings(cur)
        # Two runs of the same sources wait for each other instead of interleaving.
        cur.execute(s.ADVISORY_LOCK, (lock_key(source_codes),))
        lap("lock")
        result = compute_diff(cur, t, source_codes, lap)
        row_checks = _skip_row_by_row_fk_checks(cur)

        cur.execute(s.q(s.DEACTIVATE, d=t.diff))
        deactivated = cur.rowcount
        lap("deactivate acteurs")
        cur.execute(s.q(s.UPDATE_CHANGED, assignments=assignments, m=t.acteurs, d=t.diff))
        updated = cur.rowcount
        lap("update changed acteurs")
        # The staged tables are written in key order (byte order: the order of the C.UTF-8 index
        # keys), so that the indexes grow at their right edge. When every staged acteur is written
        # (a first load), they are read as they lie: no join, no sort.
        staged = result.new + result.changed + result.unchanged + result.inactive
        new_rows: sql.Composable
        new_order: sql.Composable
        if result.new == staged:
            new_rows, new_order = sql.SQL(""), sql.SQL("")
        else:
            new_rows, new_order = s.q(s.ONLY_NEW, d=t.diff), sql.SQL(s.NEW_ORDER)
        cur.execute(
            s.q(
                s.INSERT_ACTEURS,
                columns=columns,
                staged_columns=staged_columns,
                m=t.acteurs,
                new_rows=new_rows,
                new_order=new_order,
            )
        )
        written["qfdmo_acteur"] = deactivated + updated + cur.rowcount
        lap("insert new acteurs")

        # Sets of changed acteurs are replaced; new acteurs have none yet.
        changed = s.q(s.CHANGED_ACTEURS, d=t.diff)
        deleted = {}
        for table, statement in (
            ("qfdmo_propositionservice_sous_categories", s.DELETE_SOUS_CATEGORIES),
            ("qfdmo_propositionservice", s.DELETE_PROPOSITIONS),
            ("qfdmo_acteur_labels", s.DELETE_LABELS),
            ("qfdmo_acteur_acteur_services", s.DELETE_SERVICES),
        ):
            cur.execute(s.q(statement, changed=changed))
            deleted[table] = cur.rowcount
        lap("delete replaced sets")

        written_rows: sql.Composable
        written_order: sql.Composable
        if result.new + result.changed == staged:
            written_rows, written_order = sql.SQL(""), sql.SQL("")
        else:
            written_rows, written_order = s.q(s.ONLY_WRITTEN, d=t.diff), sql.SQL(s.WRITTEN_ORDER)
        sequence = one_row(cur.execute(s.PROPOSITION_SEQUENCE))[0]
        ps_count, psc_count = one_row(
            cur.execute(
                s.q(
                    s.INSERT_PROPOSITIONS,
                    p=t.propositions,
                    written_rows=written_rows,
                    written_order=written_order,
                    sequence=sql.Literal(sequence),
                )
            )
        )
        written["qfdmo_propositionservice"] = deleted["qfdmo_propositionservice"] + ps_count
        written["qfdmo_propositionservice_sous_categories"] = (
            deleted["qfdmo_propositionservice_sous_categories"] + psc_count
        )
        lap("insert propositions + sous-catégories")
        cur.execute(s.q(s.INSERT_LABELS, l=t.labels, written_rows=written_rows, written_order=written_order))
        written["qfdmo_acteur_labels"] = deleted["qfdmo_acteur_labels"] + cur.rowcount
        lap("insert labels")
        cur.execute(s.q(s.INSERT_SERVICES, s=t.services, written_rows=written_rows, written_order=written_order))
        written["qfdmo_acteur_acteur_services"] = deleted["qfdmo_acteur_acteur_services"] + cur.rowcount
        lap("insert acteur_services")
        if row_checks:
            # Deferred foreign keys are checked here, still inside the transaction.
            cur.execute(s.CHECK_DEFERRED)
            lap("foreign key checks")
        # After a bulk load, autovacuum may not have analysed the tables before the next
        # run plans its diff; stale "empty table" estimates lead to nested loops over 500k rows.
        cur.execute("SET LOCAL default_statistics_target = 30")
        for table, key_columns in _STATISTICS_COLUMNS.items():
            if written.get(table, 0) >= ANALYZE_THRESHOLD:
                cur.execute(s.q(s.ANALYZE_COLUMNS, t=sql.Identifier(table), columns=sql.SQL(key_columns)))
        lap("analyze")
    lap("commit")
    seconds = time.perf_counter() - started
    log.info(
        "carte apply %s: %s in %.1fs (%s)",
        run_key,
        written,
        seconds,
        ", ".join(f"{k} {v:.1f}s" for k, v in lap.seconds.items()),
    )
    return ApplyResult(diff=result, rows_written=written, seconds=seconds, statement_seconds=lap.seconds)


def _skip_row_by_row_fk_checks(cur: psycopg.Cursor) -> bool:
    """Replace per-row foreign key triggers by set-based guarantees when allowed.

    Each FK check is a trigger call plus a row lock (~5 µs): for a first load of
    500k acteurs with their propositions that is millions of checks, several
    times the cost of the writes themselves. Every id we write was resolved by a
    join on the same snapshot (codes) or written by this transaction (acteurs,
    propositions), so the only thing left to guarantee is that no referenced
    reference row disappears before commit: one FOR KEY SHARE lock per reference
    row does that. Needs `session_replication_role` (superuser, or PostgreSQL
    15's `GRANT SET ON PARAMETER session_replication_role`); otherwise the
    regular triggers run. Returns True when the row-by-row checks stay on.
    """
    try:
        with cur.connection.transaction():
            cur.execute(s.REPLICA_ROLE)
    except psycopg.errors.InsufficientPrivilege:
        log.warning("session_replication_role not allowed: foreign keys checked row by row")
        return True
    for table in _REFERENCED_TABLES:
        cur.execute(s.q(s.KEY_SHARE_ALL, t=sql.Identifier(table)))
    return False
