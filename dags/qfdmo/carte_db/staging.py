"""stage(): COPY a run's normalised files into staging, merge them, check them, compute the diff.

The four files of ``run_dir`` (format: ``staging_format``) are COPYed into UNLOGGED tables of
schema ``qfdmo_staging`` suffixed by the run key (``run_tables``), codes are resolved to ids
(unknown codes -> ``StagingError`` before anything is written to qfdmo tables, see ``checks``),
duplicate identifiant_unique rows are merged (lowest row_number wins for scalar columns; union of
propositions, sous-catégories, labels and services) and the diff is computed (``diffing``). With a
second connection, the sets (propositions, labels, services) are loaded and checked on it, in parallel.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql

from qfdmo.carte_db import statements as s
from qfdmo.carte_db.checks import check_acteurs, check_sets
from qfdmo.carte_db.diffing import compute_diff
from qfdmo.carte_db.results import StageResult, StagingError
from qfdmo.carte_db.run_tables import (
    STAGING_SCHEMA,
    Laps,
    RunTables,
    SourceCodes,
    run_tables,
    staging_settings,
)
from qfdmo.carte_db.staging_format import (
    ACTEUR_FIELDS,
    ACTEUR_SERVICES_FILE,
    ACTEURS_FILE,
    BOOL_COLUMNS,
    CODE_COLUMNS,
    FILES,
    LABELS_FILE,
    PROPOSITIONS_FILE,
    TEXT_COLUMNS,
    ActeurColumn,
)

T = TypeVar("T")
R = TypeVar("R")

_STAGING_TYPES = {c.name: c.staging_type for c in ACTEUR_FIELDS}


def stage(
    conn: psycopg.Connection,
    run_key: str,
    run_dir: Path,
    source_codes: SourceCodes,
    second_conn: psycopg.Connection | None = None,
) -> StageResult:
    """COPY the run files into staging, merge duplicates, resolve codes, compute the diff.

    With `second_conn` (another connection to the same database), the propositions, labels and
    services are loaded and merged on it while `conn` loads the acteurs: two server processes,
    two cores. Staging tables are the run's own, so they need no common transaction; a failure
    leaves some of them behind for drop_staging(), and nothing in the qfdmo tables.
    """
    t = run_tables(run_key)
    seconds: dict[str, float] = {}
    statements: dict[str, float] = {}
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(s.q(s.CREATE_SCHEMA, schema=sql.Identifier(STAGING_SCHEMA)))
        for table in t.all():
            cur.execute(s.q(s.DROP_TABLE, t=table))
    acteurs_rows, propositions_rows = side_by_side(
        conn, second_conn, _stage_acteurs, _stage_sets, t, run_dir, statements
    )
    rows = acteurs_rows | propositions_rows
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    acteurs_problems, sets_problems = side_by_side(
        conn, second_conn, check_acteurs, check_sets, t, source_codes, statements
    )
    if acteurs_problems or sets_problems:
        raise StagingError("; ".join(acteurs_problems + sets_problems))
    seconds["check"] = time.perf_counter() - started

    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        staging_settings(cur)
        lap = Laps()
        result = compute_diff(cur, t, source_codes, lap)
        seconds["diff"] = time.perf_counter() - started
    statements |= lap.seconds
    acteurs = result.new + result.changed + result.unchanged + result.inactive
    return StageResult(
        run_key=run_key,
        rows=rows,
        acteurs=acteurs,
        duplicates_merged=rows[ACTEURS_FILE] - acteurs,
        diff=result,
        seconds={k: round(v, 3) for k, v in seconds.items()},
        statement_seconds={k: round(v, 3) for k, v in statements.items()},
    )


StagingWork = Callable[[psycopg.Cursor, RunTables, T, Laps], R]


def _in_transaction(
    conn: psycopg.Connection, work: StagingWork[T, R], t: RunTables, argument: T
) -> tuple[R, dict[str, float]]:
    """`work(cursor, t, argument, lap)` in a staging transaction of its own on `conn`, with the
    seconds of its statements."""
    with conn.transaction(), conn.cursor() as cur:
        staging_settings(cur)
        lap = Laps()
        result = work(cur, t, argument, lap)
    lap("commit")
    return result, lap.seconds


def side_by_side(
    conn: psycopg.Connection,
    second_conn: psycopg.Connection | None,
    first: StagingWork[T, R],
    second: StagingWork[T, R],
    t: RunTables,
    argument: T,
    statement_seconds: dict[str, float],
) -> tuple[R, R]:
    """(first on conn, second on second_conn) run at the same time, each in its own transaction;
    both on conn, one after the other, without a second connection. The seconds of their
    statements are added to `statement_seconds`, named after the work."""
    if second_conn is None:
        first_result = _in_transaction(conn, first, t, argument)
        second_result = _in_transaction(conn, second, t, argument)
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="staging") as pool:
            second_future = pool.submit(_in_transaction, second_conn, second, t, argument)
            try:
                first_result = _in_transaction(conn, first, t, argument)
            finally:
                # Waited for even when the first failed: its transaction must end before the caller goes on.
                second_result = second_future.result()
    for work, (_, laps) in ((first, first_result), (second, second_result)):
        name = work.__name__.lstrip("_").replace("_", " ")
        statement_seconds |= {f"{name}: {statement}": v for statement, v in laps.items()}
    return first_result[0], second_result[0]


def _load_raw(cur: psycopg.Cursor, table: sql.Composable, run_dir: Path, filename: str) -> int:
    """Create the raw staging table of one run file and COPY the file into it."""
    column_defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_STAGING_TYPES.get(c, "text"))) for c in FILES[filename]
    )
    cur.execute(s.q(s.CREATE_RAW, t=table, defs=column_defs))
    path = run_dir / filename
    if not path.exists():
        raise StagingError(f"missing run file {path}")
    with cur.copy(s.q(s.COPY_IN, t=table)) as copy, open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            copy.write(chunk)
    return cur.rowcount


def _stage_sets(cur: psycopg.Cursor, t: RunTables, run_dir: Path, lap: Laps) -> dict[str, int]:
    """Load propositions.tsv, labels.tsv and acteur_services.tsv and merge them: one row per
    (acteur, action), per (acteur, label) and per (acteur, service)."""
    rows: dict[str, int] = {}
    for table, filename in (
        (t.propositions_raw, PROPOSITIONS_FILE),
        (t.labels_raw, LABELS_FILE),
        (t.services_raw, ACTEUR_SERVICES_FILE),
    ):
        rows[filename] = _load_raw(cur, table, run_dir, filename)
        lap(f"copy {filename}")
    # Sorted groups, not hashed ones: ~1M array_agg states would not fit in work_mem and spill;
    # sorted in byte order ("C", abbreviated keys), which is also the order apply() writes in.
    # Labels and services likewise: one pass gives the distinct rows in key order.
    cur.execute("SET LOCAL enable_hashagg = off")
    cur.execute(s.q(s.MERGE_PROPOSITIONS, p=t.propositions, raw=t.propositions_raw))
    lap("merge propositions")
    for merged, raw, reference, code, id_column in (
        (t.labels, t.labels_raw, "qfdmo_labelqualite", "label_code", "labelqualite_id"),
        (t.services, t.services_raw, "qfdmo_acteurservice", "acteur_service_code", "acteurservice_id"),
    ):
        cur.execute(
            s.q(
                s.MERGE_CODES,
                merged=merged,
                raw=raw,
                reference=sql.Identifier(reference),
                code=sql.Identifier(code),
                id=sql.Identifier(id_column),
            )
        )
    cur.execute("SET LOCAL enable_hashagg = on")
    lap("merge labels and services")
    return rows


def _stage_acteurs(cur: psycopg.Cursor, t: RunTables, run_dir: Path, lap: Laps) -> dict[str, int]:
    """Load acteurs.tsv and merge it: one row per acteur."""
    rows = {ACTEURS_FILE: _load_raw(cur, t.acteurs_raw, run_dir, ACTEURS_FILE)}
    lap(f"copy {ACTEURS_FILE}")
    # Signatures of the staged sets, filled by the diff for the acteurs that already exist
    # (a new acteur has nothing to compare with: a first load computes none).
    cur.execute(s.q(s.CREATE_SETS, sets=t.sets))
    cur.execute(
        s.q(
            s.MERGE_ACTEURS,
            a=t.acteurs,
            raw=t.acteurs_raw,
            scalar_columns=sql.SQL(", ").join(
                [_staged_column(c) for c in TEXT_COLUMNS] + [_staged_column(c) for c in BOOL_COLUMNS]
            ),
            code_ids=sql.SQL(", ").join(
                sql.SQL("{}.id AS {}").format(sql.Identifier(f"ref_{c.name}"), sql.Identifier(c.stored_as or ""))
                for c in CODE_COLUMNS
            ),
            codes=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c.name)) for c in CODE_COLUMNS),
            code_joins=sql.SQL(" ").join(
                sql.SQL("LEFT JOIN {ref} {alias} ON {alias}.code = r.{code}").format(
                    ref=sql.Identifier(c.reference or ""),
                    alias=sql.Identifier(f"ref_{c.name}"),
                    code=sql.Identifier(c.name),
                )
                for c in CODE_COLUMNS
            ),
        )
    )
    lap("merge acteurs")
    return rows


def _staged_column(column: ActeurColumn) -> sql.Composable:
    """The run file's value of a column as qfdmo_acteur stores it. The run files write "not given"
    as '' in every text column; a column whose webapp choices do not include '' says it with NULL."""
    if column.empty_is_null:
        return sql.SQL("nullif(r.{c}, '') AS {c}").format(c=sql.Identifier(column.name))
    return sql.SQL("r.{}").format(sql.Identifier(column.name))
