"""The diff of a staged run against qfdmo_acteur: new / changed / unchanged / inactive / to_deactivate.

inactive = INACTIF in the database (a human decision, left untouched); to_deactivate = ACTIF
acteurs of the run's sources absent from the feed. "Changed" compares every managed column
(staging_format.MANAGED_COLUMNS, location as EWKB) and statut with ``IS DISTINCT FROM``, and the
sets through order-independent 64-bit signatures (statements.SET_SIGNATURES), computed on both
sides in SQL for the acteurs that already exist only (a first load signs nothing). A SUPPRIME
acteur present again is changed (reactivated). ``DiffResult.changed_columns`` counts the changed
acteurs per differing column.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from qfdmo.carte_db import statements as s
from qfdmo.carte_db.queries import one_row
from qfdmo.carte_db.results import DiffResult
from qfdmo.carte_db.run_tables import Laps, RunTables, SourceCodes, run_tables, session_settings
from qfdmo.carte_db.staging_format import MANAGED_COLUMNS

EXAMPLES = 5


def diff(conn: psycopg.Connection, run_key: str, source_codes: SourceCodes) -> DiffResult:
    """Recompute the diff of a staged run against the current database."""
    with conn.transaction(), conn.cursor() as cur:
        session_settings(cur)
        return compute_diff(cur, run_tables(run_key), source_codes, Laps())


def set_signatures(
    propositions: sql.Composable, sous_categories: sql.Composable, labels: sql.Composable, services: sql.Composable
) -> sql.Composed:
    """statements.SET_SIGNATURES over four queries giving `acteur` and the ids: propositions
    (action_id), sous_categories (action_id, souscategorie_id), labels (labelqualite_id),
    services (acteurservice_id)."""
    return s.q(
        s.SET_SIGNATURES,
        propositions=propositions,
        sous_categories=sous_categories,
        labels=labels,
        services=services,
    )


def compute_diff(cur: psycopg.Cursor, t: RunTables, source_codes: SourceCodes, lap: Laps) -> DiffResult:
    """(Re)create the run's diff table and count it, on `cur`'s transaction.

    The diff table lists the new, changed and inactive staged acteurs and those to deactivate;
    when no staged acteur is in the carte yet (a first load), it lists only those to deactivate,
    and nothing is signed or compared: the staged acteurs are the new ones.
    """
    staged_count = one_row(cur.execute(s.q(s.COUNT, t=t.acteurs)))[0]
    every_new = not one_row(cur.execute(s.q(s.ANY_STAGED_IN_CARTE, a=t.acteurs)))[0]
    lap("diff: any staged acteur in the carte")
    cur.execute(s.q(s.DROP_TABLE, t=t.diff))
    if every_new:
        cur.execute(s.q(s.CREATE_DIFF_EVERY_NEW, d=t.diff), {"sources": list(source_codes)})
    else:
        _staged_signatures(cur, t, staged_count)
        lap("diff: sign staged sets")
        cur.execute(
            s.q(
                s.CREATE_DIFF,
                d=t.diff,
                a=t.acteurs,
                sets=t.sets,
                managed=column_list("a"),
                staged=column_list("m"),
                db_signatures=set_signatures(
                    propositions=s.q(s.DB_PROPOSITIONS, a=t.acteurs),
                    sous_categories=s.q(s.DB_SOUS_CATEGORIES, a=t.acteurs),
                    labels=s.q(s.DB_LABELS, a=t.acteurs),
                    services=s.q(s.DB_SERVICES, a=t.acteurs),
                ),
            ),
            {"sources": list(source_codes)},
        )
    lap("diff: diff table")
    cur.execute(s.q(s.ANALYZE, t=t.diff))
    counts: dict[str, int] = dict(cur.execute(s.q(s.DIFF_COUNTS, d=t.diff)).fetchall())
    if every_new:
        counts["new"] = staged_count
    counts["unchanged"] = staged_count - sum(counts.get(k, 0) for k in ("new", "changed", "inactive"))
    active_before = one_row(cur.execute(s.ACTIVE_BEFORE, (list(source_codes),)))[0]
    examples: dict[str, list[str]] = {}
    for kind in ("new", "changed", "to_deactivate", "inactive"):
        if counts.get(kind):
            if every_new and kind == "new":
                cur.execute(s.q(s.STAGED_EXAMPLES, a=t.acteurs), (EXAMPLES,))
            else:
                cur.execute(s.q(s.DIFF_EXAMPLES, d=t.diff), (kind, EXAMPLES))
            examples[kind] = [r[0] for r in cur.fetchall()]
    lap("diff: counts")
    result = DiffResult(
        new=counts.get("new", 0),
        changed=counts.get("changed", 0),
        unchanged=counts.get("unchanged", 0),
        inactive=counts.get("inactive", 0),
        to_deactivate=counts.get("to_deactivate", 0),
        active_before=active_before,
        examples=examples,
        changed_columns=_changed_columns(cur, t) if counts.get("changed") else {},
    )
    lap("diff: changed columns")
    return result


def _staged_signatures(cur: psycopg.Cursor, t: RunTables, staged: int) -> None:
    """Add to the sets table the signature of each staged acteur that exists in qfdmo_acteur and
    has none yet, the same function compute_diff() applies to the qfdmo tables.

    Computed for existing acteurs only (a new acteur has nothing to compare with), so a first
    load computes none. Acteurs without any set get no row (their signature is 0). The apply
    transaction calls it again: only acteurs that appeared in qfdmo_acteur since the stage are
    computed then.
    """
    cur.execute(s.q(s.DROP_TABLE, t=t.todo))
    cur.execute(s.q(s.CREATE_TODO, todo=t.todo, a=t.acteurs, sets=t.sets))
    todo = cur.rowcount
    if todo == 0:
        cur.execute(s.q(s.DROP_TABLE, t=t.todo))
        return
    # Every staged acteur to sign (a re-run of a loaded feed): no need to join each set with the list.
    only = sql.SQL("") if todo == staged else s.q(s.ONLY_TODO, todo=t.todo)
    cur.execute(
        s.q(
            s.INSERT_SIGNATURES,
            sets=t.sets,
            signatures=set_signatures(
                propositions=s.q(s.STAGED_PROPOSITIONS, p=t.propositions, only=only),
                sous_categories=s.q(s.STAGED_SOUS_CATEGORIES, p=t.propositions, only=only),
                labels=s.q(s.STAGED_LABELS, l=t.labels, only=only),
                services=s.q(s.STAGED_SERVICES, s=t.services, only=only),
            ),
        )
    )
    signed = cur.rowcount
    cur.execute(s.q(s.DROP_TABLE, t=t.todo))
    if signed > 0:
        # Without statistics the planner would take the signatures for a handful of rows.
        cur.execute(s.q(s.ANALYZE, t=t.sets))


def _changed_columns(cur: psycopg.Cursor, t: RunTables) -> dict[str, int]:
    """Per-column counts over the changed acteurs, for the run report and the approval form."""
    per_column = [
        sql.SQL("count(*) FILTER (WHERE a.{c} IS DISTINCT FROM m.{c})").format(c=sql.Identifier(c))
        if c != "location"
        else sql.SQL("count(*) FILTER (WHERE a.location::bytea IS DISTINCT FROM m.location::bytea)")
        for c in MANAGED_COLUMNS
    ]
    row = one_row(
        cur.execute(s.q(s.CHANGED_COLUMN_COUNTS, per_column=sql.SQL(", ").join(per_column), d=t.diff, a=t.acteurs))
    )
    counts = dict(zip((*MANAGED_COLUMNS, "reactivated"), row, strict=True))
    changed = one_row(cur.execute(s.q(s.COUNT_CHANGED, d=t.diff)))[0]
    # Changed acteurs whose columns and statut are all equal differ by their sets only; others may too.
    scalar_changed = one_row(
        cur.execute(
            s.q(s.SCALAR_CHANGED, d=t.diff, a=t.acteurs, managed=column_list("a"), staged=column_list("m"))
        )
    )[0]
    counts["sets_only"] = changed - scalar_changed
    return {k: v for k, v in counts.items() if v}


def column_list(alias: str) -> sql.Composable:
    """The managed columns of `alias` as the diff compares them (location as EWKB)."""
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
        if c != "location"
        else sql.SQL("{}.location::bytea").format(sql.Identifier(alias))
        for c in MANAGED_COLUMNS
    )
