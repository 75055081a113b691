"""Replaces the webapp's qfdmo_displayed* and qfdmo_vue* tables by the models dbt built in schema
qfdmo_carte, in ONE transaction, applying only the difference.

Why the difference and not a rename swap (what upstream does): the webapp's tables stay the
webapp's (columns, defaults, indexes, foreign keys, grants untouched); DELETE/UPDATE/INSERT take
ROW EXCLUSIVE locks, which never block a reader (SELECT takes ACCESS SHARE), whereas a rename
needs ACCESS EXCLUSIVE on every table, queued behind any running query and blocking all readers
meanwhile; a quiet day writes a few rows instead of every row and every index. Readers run at READ
COMMITTED: each statement sees the old set or the new set, never a mix, never an empty table.

The difference is computed first, into temporary tables, without any lock but the readers' own
(ACCESS SHARE); only then are the tables locked and written, so the write-lock window is the DML
of the changed rows and the deferred foreign-key checks at COMMIT.

Bounded lock wait: each table is locked just before it is first written, under `lock_timeout`;
when a lock cannot be had (someone holds a conflicting lock: DDL, VACUUM FULL…), the whole
transaction is rolled back and retried a few times, then the swap fails with nothing written.

Guard: when the new displayed acteurs would be fewer than the current ones by more than
`max_drop_share` of the current table, nothing is written and the caller asks a person (force=True
applies anyway). The guard is evaluated inside the swap's transaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from qfdmo.carte.dbt_runner import SCHEMA

DEFAULT_MAX_DROP_SHARE = 0.05
DEFAULT_LOCK_TIMEOUT_S = 5.0
DEFAULT_ATTEMPTS = 4
_SWAP_LOCK_KEY = 7_146_201_012
APPLICATION_NAME = "qfdmo-carte-swap"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One webapp table and the model that holds its new content; `key` identifies a row."""

    table: str
    model: str
    key: tuple[str, ...]


# Referenced tables first (inserts in this order, deletes in the reverse order).
TARGETS: tuple[Target, ...] = (
    Target("qfdmo_displayedacteur", "carte_acteur", ("identifiant_unique",)),
    Target("qfdmo_displayedpropositionservice", "carte_propositionservice", ("id",)),
    Target("qfdmo_displayedpropositionservice_sous_categories", "carte_propositionservice_sous_categories",
           ("displayedpropositionservice_id", "souscategorieobjet_id")),
    Target("qfdmo_displayedacteur_labels", "carte_acteur_labels", ("displayedacteur_id", "labelqualite_id")),
    Target("qfdmo_displayedacteur_acteur_services", "carte_acteur_acteur_services",
           ("displayedacteur_id", "acteurservice_id")),
    Target("qfdmo_displayedacteur_sources", "carte_acteur_sources", ("displayedacteur_id", "source_id")),
    Target("qfdmo_displayedperimetreadomicile", "carte_perimetreadomicile", ("acteur_id", "type", "valeur")),
    Target("qfdmo_vueacteur", "vue_acteur", ("identifiant_unique",)),
    Target("qfdmo_vuepropositionservice", "vue_propositionservice", ("id",)),
    Target("qfdmo_vuepropositionservice_sous_categories", "vue_propositionservice_sous_categories",
           ("vuepropositionservice_id", "souscategorieobjet_id")),
    Target("qfdmo_vueacteur_labels", "vue_acteur_labels", ("vueacteur_id", "labelqualite_id")),
    Target("qfdmo_vueacteur_acteur_services", "vue_acteur_acteur_services", ("vueacteur_id", "acteurservice_id")),
    Target("qfdmo_vueacteur_sources", "vue_acteur_sources", ("vueacteur_id", "source_id")),
    Target("qfdmo_vueperimetreadomicile", "vue_perimetreadomicile", ("acteur_id", "type", "valeur")),
)
DISPLAYED = TARGETS[0]


class SwapError(RuntimeError):
    """The swap could not run (locks not obtained, models missing); nothing was written."""


@dataclass
class SwapResult:
    status: str  # "swapped" | "needs_approval"
    guard: dict[str, Any]
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, dict[str, int]] = field(default_factory=dict)
    attempts: int = 0
    statement_seconds: dict[str, float] = field(default_factory=dict)
    lock_window_s: float = 0.0  # first lock taken -> COMMIT (row locks only: readers never wait)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "guard": self.guard, "rows_before": self.rows_before,
            "rows_after": self.rows_after, "rows_written": self.rows_written, "attempts": self.attempts,
            "lock_window_s": round(self.lock_window_s, 3), "seconds": round(self.seconds, 3),
            "statement_seconds": self.statement_seconds,
            "total_rows_written": sum(sum(v.values()) for v in self.rows_written.values()),
        }


class _GuardStop(Exception):
    pass


def _count(conn: psycopg.Connection, schema: str | None, table: str) -> int:
    name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
    return int(row[0]) if row else 0


def guard_check(conn: psycopg.Connection, max_drop_share: float = DEFAULT_MAX_DROP_SHARE) -> dict[str, Any]:
    """Current vs new displayed acteurs, and whether a person must approve the swap."""
    current = _count(conn, None, DISPLAYED.table)
    new = _count(conn, SCHEMA, DISPLAYED.model)
    drop_share = (current - new) / current if current and new < current else 0.0
    return {
        "displayed_current": current,
        "displayed_new": new,
        "drop_share": round(drop_share, 4),
        "max_drop_share": max_drop_share,
        "needs_approval": drop_share > max_drop_share,
    }


def _model_columns(conn: psycopg.Connection, target: Target) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT m.column_name, m.udt_name FROM information_schema.columns m"
        " JOIN information_schema.columns t ON t.table_schema = current_schema()"
        "  AND t.table_name = %s AND t.column_name = m.column_name"
        " WHERE m.table_schema = %s AND m.table_name = %s ORDER BY m.ordinal_position",
        (target.table, SCHEMA, target.model),
    ).fetchall()
    if not rows:
        raise SwapError(f"model {SCHEMA}.{target.model} is missing (run dbt build first)")
    return [(name, udt) for name, udt in rows]


def _comparable(alias: str, column: str, udt: str) -> sql.Composable:
    ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column))
    # geography has no plain equality: compare the exact bytes.
    return sql.SQL("ST_AsEWKB({}::geometry)").format(ref) if udt in ("geography", "geometry") else ref


def _key_match(target: Target, left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}.{}").format(sql.Identifier(left), sql.Identifier(k), sql.Identifier(right),
                                        sql.Identifier(k))
        for k in target.key
    )


def _statements(index: int, target: Target, columns: list[tuple[str, str]],
                empty: bool) -> dict[str, dict[str, sql.Composed]]:
    """`diff`: the rows to delete / update / insert, computed into temporary tables before any
    lock is taken (only swaps write these tables, and the advisory lock serialises them, so the
    difference cannot go stale); `apply`: the writes themselves, under the locks. An `empty`
    webapp table (the first fill) has no difference to compute: one INSERT … SELECT of the model
    in key order (the indexes are filled in order)."""
    table, model = sql.Identifier(target.table), sql.Identifier(SCHEMA, target.model)
    names = [name for name, _ in columns]
    values = [(name, udt) for name, udt in columns if name not in target.key]
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    if empty:
        fill = sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {m} ORDER BY {keys}").format(
            t=table, cols=cols, m=model, keys=sql.SQL(", ").join(map(sql.Identifier, target.key)))
        return {"diff": {}, "apply": {"inserted": fill}}
    deleted, updated, inserted = (sql.Identifier(f"swap_{kind}_{index}") for kind in ("deleted", "updated", "inserted"))
    mcols = sql.SQL(", ").join(sql.SQL("m.{}").format(sql.Identifier(n)) for n in names)
    keys = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(k)) for k in target.key)
    diff = {
        "deleted": sql.SQL("CREATE TEMP TABLE {d} ON COMMIT DROP AS SELECT {keys} FROM {t} AS t"
                           " WHERE NOT EXISTS (SELECT 1 FROM {m} AS m WHERE {match})").format(
            d=deleted, keys=keys, t=table, m=model, match=_key_match(target, "m", "t")),
        "inserted": sql.SQL("CREATE TEMP TABLE {i} ON COMMIT DROP AS SELECT {mcols} FROM {m} AS m"
                            " WHERE NOT EXISTS (SELECT 1 FROM {t} AS t WHERE {match})").format(
            i=inserted, mcols=mcols, t=table, m=model, match=_key_match(target, "m", "t")),
    }
    apply = {
        "deleted": sql.SQL("DELETE FROM {t} AS t USING {d} AS m WHERE {match}").format(
            t=table, d=deleted, match=_key_match(target, "m", "t")),
        "inserted": sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} FROM {i}").format(t=table, cols=cols, i=inserted),
    }
    if values:
        diff["updated"] = sql.SQL(
            "CREATE TEMP TABLE {u} ON COMMIT DROP AS SELECT {mcols} FROM {m} AS m JOIN {t} AS t ON {match}"
            " WHERE ({old}) IS DISTINCT FROM ({new})").format(
            u=updated, mcols=mcols, t=table, m=model, match=_key_match(target, "m", "t"),
            old=sql.SQL(", ").join(_comparable("t", n, u) for n, u in values),
            new=sql.SQL(", ").join(_comparable("m", n, u) for n, u in values))
        apply["updated"] = sql.SQL("UPDATE {t} AS t SET {assign} FROM {u} AS m WHERE {match}").format(
            t=table, u=updated, match=_key_match(target, "m", "t"),
            assign=sql.SQL(", ").join(sql.SQL("{} = m.{}").format(sql.Identifier(n), sql.Identifier(n))
                                      for n, _ in values))
    return {"diff": diff, "apply": apply}


def _apply(conn: psycopg.Connection, lock_timeout_s: float, max_drop_share: float, force: bool,
           result: SwapResult) -> float:
    """The swap's statements (the caller commits); returns when the last one ended."""
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_s * 1000)}ms")))
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SWAP_LOCK_KEY,))
    result.guard = guard_check(conn, max_drop_share)
    if result.guard["needs_approval"] and not force:
        raise _GuardStop
    for target in TARGETS:
        result.rows_before[target.table] = _count(conn, None, target.table)
    statements = {t.table: _statements(i, t, _model_columns(conn, t), empty=result.rows_before[t.table] == 0)
                  for i, t in enumerate(TARGETS)}
    written: dict[str, dict[str, int]] = {t.table: {"deleted": 0, "updated": 0, "inserted": 0} for t in TARGETS}
    timings = result.statement_seconds

    def run(target: Target, phase: str, kind: str) -> None:
        mark = time.perf_counter()
        count = conn.execute(statements[target.table][phase][kind]).rowcount
        if phase == "apply":
            written[target.table][kind] = count
        timings[f"{target.table}.{phase}.{kind}"] = round(time.perf_counter() - mark, 3)

    for target in TARGETS:
        for kind in statements[target.table]["diff"]:
            run(target, "diff", kind)
    locked: set[str] = set()
    window_start: float | None = None

    def lock(target: Target) -> None:
        nonlocal window_start
        if target.table not in locked:
            conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(target.table)))
            window_start = window_start or time.perf_counter()
            locked.add(target.table)

    for target in reversed(TARGETS):  # rows that refer to others go first
        lock(target)
        if "deleted" in statements[target.table]["apply"]:
            run(target, "apply", "deleted")
    for target in TARGETS:
        lock(target)
        if "updated" in statements[target.table]["apply"]:
            run(target, "apply", "updated")
        run(target, "apply", "inserted")
    result.rows_written = written
    result.rows_after = {
        t.table: result.rows_before[t.table] - written[t.table]["deleted"] + written[t.table]["inserted"]
        for t in TARGETS
    }
    result.lock_window_s = -(window_start or time.perf_counter())  # completed after COMMIT
    return time.perf_counter()


def swap(dsn: str, max_drop_share: float = DEFAULT_MAX_DROP_SHARE, force: bool = False,
         lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, attempts: int = DEFAULT_ATTEMPTS) -> SwapResult:
    """Makes the webapp's tables equal to the models (one transaction), unless the guard stops it."""
    started = time.perf_counter()
    result = SwapResult(status="swapped", guard={})
    with psycopg.connect(dsn, application_name=APPLICATION_NAME) as conn:
        # The diff's anti-joins need the models' statistics (measured: a first swap of 20,000
        # acteurs took 217 s without, 31 s with). dbt's post-hook gathers them; a model without
        # any is analysed here, outside the transaction.
        conn.autocommit = True
        mark = time.perf_counter()
        for (model,) in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind = 'r' AND NOT EXISTS"
                " (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)",
                (SCHEMA, [t.model for t in TARGETS])).fetchall():
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(SCHEMA, model)))
        analyzed = round(time.perf_counter() - mark, 3)
        conn.autocommit = False
        for attempt in range(1, attempts + 1):
            result.attempts = attempt
            result.rows_before, result.rows_written, result.rows_after = {}, {}, {}
            result.statement_seconds = {"analyze": analyzed}
            try:
                with conn.transaction():
                    applied = _apply(conn, lock_timeout_s, max_drop_share, force, result)
                committed = time.perf_counter()
                result.lock_window_s += committed
                # The deferred foreign-key checks run at COMMIT, one per written row and key.
                result.statement_seconds["commit"] = round(committed - applied, 3)
                break
            except _GuardStop:
                result.status = "needs_approval"
                result.rows_before, result.rows_written, result.rows_after = {}, {}, {}
                break
            except psycopg.errors.LockNotAvailable as exc:
                log.warning("swap attempt %d/%d: lock not obtained within %.1f s (%s)", attempt, attempts,
                            lock_timeout_s, exc)
                if attempt == attempts:
                    raise SwapError(f"swap: locks not obtained in {attempts} attempts of {lock_timeout_s} s;"
                                    " nothing was written") from exc
                time.sleep(min(2.0 * attempt, 10.0))
    result.seconds = time.perf_counter() - started
    return result
