"""load_run_files() and stage(): COPY a run's normalised files into staging, merge them, check them,
compute the diff.

The four files of ``run_dir`` (format: ``staging_format``) are COPYed into UNLOGGED tables of
schema ``qfdmo_staging`` suffixed by the run key (``run_tables``), codes are resolved to ids
(unknown codes -> ``StagingError`` before anything is written to qfdmo tables, see ``checks``),
duplicate identifiant_unique rows are merged (lowest row_number wins for scalar columns; union of
propositions, sous-catégories, labels and services) and the diff is computed (``diffing``). With a
second connection, the sets (propositions, labels, services) are loaded, merged and checked on it
while the first handles the acteurs, in parallel.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

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


def load_run_files(
    conn: psycopg.Connection,
    run_key: str,
    run_dir: Path,
    second_conn: psycopg.Connection | None = None,
    statement_seconds: dict[str, float] | None = None,
) -> dict[str, int]:
    """COPY the four run files of `run_dir` into the run's raw staging tables (any table the run
    had before is dropped first: a retried task starts clean); the lines loaded per file.

    The source DAGs call it from the normalise task, right after the files are written on that task's
    scratch disk: the rows reach the next task through the database, not a shared disk. With
    `second_conn`, the three set files are loaded on it while `conn` loads acteurs.tsv.
    """
    t = run_tables(run_key)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(s.q(s.CREATE_SCHEMA, schema=sql.Identifier(STAGING_SCHEMA)))
        for table in t.all():
            cur.execute(s.q(s.DROP_TABLE, t=table))
    acteurs_rows, sets_rows = side_by_side(
        conn, second_conn, _load_acteurs_file, _load_sets_files, t, run_dir,
        statement_seconds if statement_seconds is not None else {},
    )
    return acteurs_rows | sets_rows


def stage(
    conn: psycopg.Connection,
    run_key: str,
    run_dir: Path | None,
    source_codes: SourceCodes,
    second_conn: psycopg.Connection | None = None,
) -> StageResult:
    """Merge duplicates, resolve codes, check and compute the diff of a run's raw staging tables:
    loaded here from the run files of `run_dir`, or, with `run_dir=None`, already loaded by
    `load_run_files` (the source DAGs' normalise task).

    With `second_conn` (another connection to the same database), the propositions, labels and
    services are loaded and merged on it while `conn` loads the acteurs: two server processes,
    two cores. Staging tables are the run's own, so they need no common transaction; a failure
    leaves some of them behind for drop_staging(), and nothing in the qfdmo tables.
    """
    t = run_tables(run_key)
    seconds: dict[str, float] = {}
    statements: dict[str, float] = {}
    started = time.perf_counter()
    if run_dir is not None:
        rows = load_run_files(conn, run_key, run_dir, second_conn, statements)
    else:
        with conn.transaction(), conn.cursor() as cur:
            for table in t.merged():  # a retried stage merges again from the raw tables
                cur.execute(s.q(s.DROP_TABLE, t=table))
            rows = _loaded_rows(cur, t)
    seconds["load"] = time.perf_counter() - started
    side_by_side(conn, second_conn, _merge_acteurs, _merge_sets, t, None, statements)
    seconds["merge"] = time.perf_counter() - started - seconds["load"]

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


def export_run_files(
    conn: psycopg.Connection,
    run_key: str,
    open_writer: Callable[[str], contextlib.AbstractContextManager[BinaryIO]],
) -> list[str]:
    """Write the run's raw staging tables back as run files (`open_writer(filename)`: a local file,
    an S3 upload), for a failed run's diagnosis; the files written (the tables that exist)."""
    t = run_tables(run_key)
    written = []
    with conn.cursor() as cur:
        for filename, table in _raw_tables(t):
            cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),))
            row = cur.fetchone()
            if row is None or row[0] is None:
                continue
            with open_writer(filename) as out, cur.copy(sql.SQL("COPY {} TO STDOUT").format(table)) as copy:
                for block in copy:
                    out.write(block)
            written.append(filename)
    return written


def _raw_tables(t: RunTables) -> tuple[tuple[str, sql.Composable], ...]:
    return ((ACTEURS_FILE, t.acteurs_raw), (PROPOSITIONS_FILE, t.propositions_raw),
            (LABELS_FILE, t.labels_raw), (ACTEUR_SERVICES_FILE, t.services_raw))


def _loaded_rows(cur: psycopg.Cursor, t: RunTables) -> dict[str, int]:
    """The lines of each run file in its raw table (loaded by another task)."""
    rows = {}
    for filename, table in _raw_tables(t):
        cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),))
        row = cur.fetchone()
        if row is None or row[0] is None:
            raise StagingError(f"the run's {filename} was not loaded into staging (no table {table.as_string(cur)})")
        cur.execute(s.q(s.COUNT, t=table))
        count = cur.fetchone()
        rows[filename] = int(count[0]) if count else 0
    return rows


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


def _load_acteurs_file(cur: psycopg.Cursor, t: RunTables, run_dir: Path, lap: Laps) -> dict[str, int]:
    rows = {ACTEURS_FILE: _load_raw(cur, t.acteurs_raw, run_dir, ACTEURS_FILE)}
    lap(f"copy {ACTEURS_FILE}")
    return rows


def _load_sets_files(cur: psycopg.Cursor, t: RunTables, run_dir: Path, lap: Laps) -> dict[str, int]:
    rows: dict[str, int] = {}
    for table, filename in (
        (t.propositions_raw, PROPOSITIONS_FILE),
        (t.labels_raw, LABELS_FILE),
        (t.services_raw, ACTEUR_SERVICES_FILE),
    ):
        rows[filename] = _load_raw(cur, table, run_dir, filename)
        lap(f"copy {filename}")
    return rows


def _merge_sets(cur: psycopg.Cursor, t: RunTables, _: None, lap: Laps) -> None:
    """One row per (acteur, action), per (acteur, label) and per (acteur, service) from the raw tables."""
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


def _merge_acteurs(cur: psycopg.Cursor, t: RunTables, _: None, lap: Laps) -> None:
    """One row per acteur from the raw table."""
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


def _staged_column(column: ActeurColumn) -> sql.Composable:
    """The run file's value of a column as qfdmo_acteur stores it. The run files write "not given"
    as '' in every text column; a column whose webapp choices do not include '' says it with NULL."""
    if column.empty_is_null:
        return sql.SQL("nullif(r.{c}, '') AS {c}").format(c=sql.Identifier(column.name))
    return sql.SQL("r.{}").format(sql.Identifier(column.name))
