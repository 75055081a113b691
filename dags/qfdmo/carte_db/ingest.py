"""Stage, diff and apply one ingestion run into the carte database (set-based SQL).

Flow (the pipeline calls these in order; hours may pass between diff and apply
while a human approves a large deactivation):

* ``stage(conn, run_key, run_dir, source_codes[, second_conn]) -> StageResult``
  COPYs the four normalised files of ``run_dir`` (format: ``staging_format``)
  into UNLOGGED tables of schema ``qfdmo_staging`` suffixed by the run key,
  resolves codes to ids (unknown codes -> ``StagingError`` before anything is
  written to qfdmo tables), merges duplicate identifiant_unique rows (lowest
  row_number wins for scalar columns; union of propositions, sous-catégories,
  labels and services) and computes the diff. With a second connection, the
  propositions are loaded and the sets checked on it, in parallel.
* ``diff(conn, run_key, source_codes) -> DiffResult`` (re)computes the diff
  against qfdmo_acteur: new / changed / unchanged / inactive (INACTIF in the DB:
  a human decision, left untouched) / to_deactivate (ACTIF acteurs of
  ``source_codes`` absent from the feed) / active_before, with examples.
* ``apply(conn, run_key, source_codes) -> ApplyResult`` in ONE transaction,
  under an advisory lock per source set: recomputes the diff from staging,
  sets SUPPRIME on acteurs that left the feed, updates changed acteurs
  (cree_le kept, modifie_le = now()), inserts new ones, and replaces
  propositions de service (+ sous-catégories), labels and acteur_services of
  new/changed acteurs only. Unchanged acteurs are not written at all;
  qfdmo_revisionacteur is never touched. Any error rolls everything back.
* ``drop_staging(conn, run_key)`` removes the run's staging tables.

"Changed" compares every managed column (the feed's columns, location as EWKB,
statut) with ``IS DISTINCT FROM`` and the sets through order-independent 64-bit
signatures (XOR of hashes of (action), (action, sous-catégorie), label and
service ids), computed on both sides in SQL, for the acteurs that already exist
only (a first load signs nothing). A SUPPRIME acteur present again is
changed (reactivated). Columns the feed does not carry (nom_officiel,
naf_principal, commentaires, siret_is_closed, action_principale_id) are kept.
``DiffResult.changed_columns`` counts the changed acteurs per differing column.

``ApplyResult.rows_written`` counts, per qfdmo table, rows inserted, updated or
deleted (replaced sets count their deletions too): all zeros on an unchanged
re-run. When the role may set ``session_replication_role``, per-row foreign key
triggers are replaced by set-based guarantees (see _skip_row_by_row_fk_checks);
the schema's constraints themselves (unique, check, not null) always apply.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql

from qfdmo.carte_db.contract import load_contract
from qfdmo.carte_db.queries import one_row
from qfdmo.carte_db.staging_format import (
    ACTEUR_SERVICES_FILE,
    ACTEURS_FILE,
    FILES,
    LABELS_FILE,
    PROPOSITIONS_FILE,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

STAGING_SCHEMA = "qfdmo_staging"
EXAMPLES = 5
# Large enough for the hash joins/aggregates of ~500k acteurs to stay in memory.
WORK_MEM = "256MB"

# Columns the feed owns, as (column, varchar limit or None). Everything else of
# qfdmo_acteur is left as it is on update.
_TEXT_COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("identifiant_externe", 255),
    ("nom", 255),
    ("nom_commercial", 255),
    ("adresse", 255),
    ("adresse_complement", 255),
    ("code_postal", 10),
    ("ville", 255),
    ("url", 2048),
    ("email", 254),
    ("telephone", 255),
    ("siret", 14),
    ("siren", 9),
    ("description", None),
    ("horaires_osm", None),
    ("horaires_description", None),
    ("consignes_dacces", None),
    ("public_accueilli", 255),
    ("reprise", 255),
    ("lieu_prestation", 255),
)
_BOOL_COLUMNS = ("exclusivite_de_reprisereparation", "uniquement_sur_rdv")
MANAGED_COLUMNS: tuple[str, ...] = (
    *(c for c, _ in _TEXT_COLUMNS),
    *_BOOL_COLUMNS,
    "acteur_type_id",
    "source_id",
    "location",
)

_RAW_TYPES = {
    "row_number": "bigint",
    "exclusivite_de_reprisereparation": "boolean",
    "uniquement_sur_rdv": "boolean",
    "latitude": "double precision",
    "longitude": "double precision",
}


@functools.cache
def webapp_choices() -> dict[str, tuple[str, ...]]:
    """The choices the webapp's models declare for the columns we write. Django checks them in its
    forms, the database does not: a value outside them would reach the carte unchecked."""
    columns = load_contract()["qfdmo_acteur"].columns
    return {c: columns[c].choices for c in MANAGED_COLUMNS if columns[c].choices}


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
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {
            "run_key": self.run_key,
            "rows": self.rows,
            "acteurs": self.acteurs,
            "duplicates_merged": self.duplicates_merged,
            "diff": self.diff.as_dict(),
            "seconds": self.seconds,
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


@dataclass(frozen=True)
class _Tables:
    """Staging table names of one run."""

    acteurs_raw: sql.Composable
    propositions_raw: sql.Composable
    labels_raw: sql.Composable
    services_raw: sql.Composable
    acteurs: sql.Composable
    propositions: sql.Composable
    labels: sql.Composable
    services: sql.Composable
    sets: sql.Composable
    todo: sql.Composable
    diff: sql.Composable

    def all(self) -> list[sql.Composable]:
        return list(self.__dict__.values())


def staging_suffix(run_key: str) -> str:
    """A safe identifier suffix for run_key (stable, at most 48 characters)."""
    cleaned = re.sub(r"[^0-9a-z_]+", "_", run_key.lower()).strip("_")
    if cleaned == run_key and len(cleaned) <= 48:
        return cleaned
    digest = hashlib.blake2b(run_key.encode(), digest_size=4).hexdigest()
    return f"{cleaned[:39]}_{digest}"


def _tables(run_key: str) -> _Tables:
    suffix = staging_suffix(run_key)

    def name(prefix: str) -> sql.Composable:
        return sql.Identifier(STAGING_SCHEMA, f"{prefix}_{suffix}")

    return _Tables(
        acteurs_raw=name("acteurs_raw"),
        propositions_raw=name("propositions_raw"),
        labels_raw=name("labels_raw"),
        services_raw=name("services_raw"),
        acteurs=name("acteurs"),
        propositions=name("propositions"),
        labels=name("labels"),
        services=name("services"),
        sets=name("sets"),
        todo=name("todo"),
        diff=name("diff"),
    )


def _lock_key(source_codes: list[str] | tuple[str, ...] | frozenset[str]) -> int:
    digest = hashlib.blake2b(",".join(sorted(source_codes)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _q(query: str, **identifiers: sql.Composable) -> sql.Composed:
    return sql.SQL(query).format(**identifiers)


# --------------------------------------------------------------------- stage


def stage(
    conn: psycopg.Connection,
    run_key: str,
    run_dir: Path,
    source_codes: list[str] | tuple[str, ...] | frozenset[str],
    second_conn: psycopg.Connection | None = None,
) -> StageResult:
    """COPY the run files into staging, merge duplicates, resolve codes, compute the diff.

    With `second_conn` (another connection to the same database), the propositions are loaded
    and merged on it while `conn` loads the acteurs, labels and services: two server processes,
    two cores. Staging tables are the run's own, so they need no common transaction; a failure
    leaves some of them behind for drop_staging(), and nothing in the qfdmo tables.
    """
    t = _tables(run_key)
    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STAGING_SCHEMA)))
        for table in t.all():
            cur.execute(_q("DROP TABLE IF EXISTS {t}", t=table))
    acteurs_rows, propositions_rows = _side_by_side(conn, second_conn, _stage_acteurs, _stage_propositions, t, run_dir)
    rows |= acteurs_rows | propositions_rows
    seconds["load"] = time.perf_counter() - started

    started = time.perf_counter()
    _check(conn, second_conn, t, source_codes)
    seconds["check"] = time.perf_counter() - started

    started = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        _staging_settings(cur)
        acteurs = one_row(cur.execute(_q("SELECT count(*) FROM {a}", a=t.acteurs)))[0]
        result = _diff(cur, t, source_codes)
        seconds["diff"] = time.perf_counter() - started
    return StageResult(
        run_key=run_key,
        rows=rows,
        acteurs=acteurs,
        duplicates_merged=rows[ACTEURS_FILE] - acteurs,
        diff=result,
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def _in_transaction(
    conn: psycopg.Connection, work: Callable[[psycopg.Cursor, _Tables, T], R], t: _Tables, argument: T
) -> R:
    """`work(cursor, t, argument)` in a staging transaction of its own on `conn`."""
    with conn.transaction(), conn.cursor() as cur:
        _staging_settings(cur)
        return work(cur, t, argument)


def _side_by_side(
    conn: psycopg.Connection,
    second_conn: psycopg.Connection | None,
    first: Callable[[psycopg.Cursor, _Tables, T], R],
    second: Callable[[psycopg.Cursor, _Tables, T], R],
    t: _Tables,
    argument: T,
) -> tuple[R, R]:
    """(first on conn, second on second_conn) run at the same time, each in its own transaction;
    both on conn, one after the other, without a second connection."""
    if second_conn is None:
        return _in_transaction(conn, first, t, argument), _in_transaction(conn, second, t, argument)
    with ThreadPoolExecutor(1, thread_name_prefix="staging") as pool:
        second_result = pool.submit(_in_transaction, second_conn, second, t, argument)
        try:
            first_result = _in_transaction(conn, first, t, argument)
        finally:
            # Waited for even when the first failed: its transaction must end before the caller goes on.
            result_of_second = second_result.result()
    return first_result, result_of_second


def _staging_settings(cur: psycopg.Cursor) -> None:
    _session_settings(cur)
    # Staging statistics only guide joins: a small sample is enough and much cheaper.
    cur.execute("SET LOCAL default_statistics_target = 10")


def _load_raw(cur: psycopg.Cursor, table: sql.Composable, run_dir: Path, filename: str) -> int:
    """Create the raw staging table of one run file and COPY the file into it."""
    column_defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_RAW_TYPES.get(c, "text"))) for c in FILES[filename]
    )
    cur.execute(_q("CREATE UNLOGGED TABLE {t} ({defs}) WITH (autovacuum_enabled = false)", t=table, defs=column_defs))
    return _copy_file(cur, table, run_dir / filename)


def _session_settings(cur: psycopg.Cursor) -> None:
    """Settings of one stage/diff/apply transaction."""
    cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    # JIT compiles each big statement again (~0.8 s for the staged acteurs alone) for
    # plans that are I/O and hash bound: it costs more than it saves here.
    cur.execute("SET LOCAL jit = off")


def _copy_file(cur: psycopg.Cursor, table: sql.Composable, path: Path) -> int:
    if not path.exists():
        raise StagingError(f"missing run file {path}")
    with cur.copy(_q("COPY {t} FROM STDIN", t=table)) as copy, open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            copy.write(chunk)
    return cur.rowcount


# Codes are resolved to ids while merging; unknown codes become NULL (or -1) ids that _check()
# turns into a StagingError, so the happy path reads each staged table once.


def _stage_propositions(cur: psycopg.Cursor, t: _Tables, run_dir: Path) -> dict[str, int]:
    """Load propositions.tsv and merge it: one row per (acteur, action)."""
    rows = {PROPOSITIONS_FILE: _load_raw(cur, t.propositions_raw, run_dir, PROPOSITIONS_FILE)}
    # One row per (acteur, action) with the union of its sous-catégories over duplicate rows.
    # Sorted groups, not hashed ones: ~1M array_agg states would not fit in work_mem and spill;
    # sorted in byte order ("C", abbreviated keys), which is also the order apply() writes in.
    cur.execute("SET LOCAL enable_hashagg = off")
    cur.execute(
        _q(
            """
            CREATE UNLOGGED TABLE {p} WITH (autovacuum_enabled = false) AS
            SELECT iu COLLATE "default" AS identifiant_unique, action_id,
                   array_agg(souscategorie_id) FILTER (WHERE souscategorie_id IS NOT NULL) AS souscategorie_ids
            FROM (
                SELECT DISTINCT r.identifiant_unique COLLATE "C" AS iu, ac.id AS action_id,
                       CASE WHEN coalesce(r.sous_categorie_code, '') <> '' THEN coalesce(sc.id, -1) END
                           AS souscategorie_id
                FROM {raw} r
                LEFT JOIN qfdmo_action ac ON ac.code = r.action_code
                LEFT JOIN qfdmo_souscategorieobjet sc ON sc.code = r.sous_categorie_code
            ) x
            GROUP BY iu, action_id
            """,
            p=t.propositions,
            raw=t.propositions_raw,
        )
    )
    cur.execute("SET LOCAL enable_hashagg = on")
    return rows


def _stage_acteurs(cur: psycopg.Cursor, t: _Tables, run_dir: Path) -> dict[str, int]:
    """Load acteurs.tsv, labels.tsv and acteur_services.tsv and merge them: one row per acteur,
    per (acteur, label) and per (acteur, service)."""
    rows = {
        ACTEURS_FILE: _load_raw(cur, t.acteurs_raw, run_dir, ACTEURS_FILE),
        LABELS_FILE: _load_raw(cur, t.labels_raw, run_dir, LABELS_FILE),
        ACTEUR_SERVICES_FILE: _load_raw(cur, t.services_raw, run_dir, ACTEUR_SERVICES_FILE),
    }
    # One row per (acteur, label) and per (acteur, service), in key order.
    for merged, raw, reference, code, id_column in (
        (t.labels, t.labels_raw, "qfdmo_labelqualite", "label_code", "labelqualite_id"),
        (t.services, t.services_raw, "qfdmo_acteurservice", "acteur_service_code", "acteurservice_id"),
    ):
        cur.execute(
            _q(
                """
                CREATE UNLOGGED TABLE {merged} WITH (autovacuum_enabled = false) AS
                SELECT iu COLLATE "default" AS identifiant_unique, {id} FROM (
                    SELECT DISTINCT r.identifiant_unique COLLATE "C" AS iu, x.id AS {id}
                    FROM {raw} r LEFT JOIN {reference} x ON x.code = r.{code}
                ) x
                ORDER BY iu, {id}
                """,
                merged=merged,
                raw=raw,
                reference=sql.Identifier(reference),
                code=sql.Identifier(code),
                id=sql.Identifier(id_column),
            )
        )
    # Signatures of the staged sets, filled by _diff() for the acteurs that already exist
    # (a new acteur has nothing to compare with: a first load computes none).
    cur.execute(
        _q(
            "CREATE UNLOGGED TABLE {sets} (identifiant_unique text PRIMARY KEY, value bigint NOT NULL)"
            " WITH (autovacuum_enabled = false)",
            sets=t.sets,
        )
    )
    text_columns = sql.SQL(", ").join(_staged_text_column(c) for c, _ in _TEXT_COLUMNS)
    bool_columns = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in _BOOL_COLUMNS)
    # First row in feed order wins for scalar columns.
    cur.execute(
        _q(
            """
            CREATE UNLOGGED TABLE {a} WITH (autovacuum_enabled = false) AS
            SELECT DISTINCT ON (r.identifiant_unique COLLATE "C")
                r.identifiant_unique, {text_columns}, {bool_columns},
                src.id AS source_id, ty.id AS acteur_type_id,
                -- geography, as the webapp's column: its distances are in metres.
                CASE WHEN r.latitude IS NOT NULL AND r.longitude IS NOT NULL
                     THEN ST_SetSRID(ST_MakePoint(r.longitude, r.latitude), 4326)::geography END AS location,
                r.source_code, r.acteur_type_code
            FROM {raw} r
            LEFT JOIN qfdmo_source src ON src.code = r.source_code
            LEFT JOIN qfdmo_acteurtype ty ON ty.code = r.acteur_type_code
            ORDER BY r.identifiant_unique COLLATE "C", r.row_number
            """,
            a=t.acteurs,
            raw=t.acteurs_raw,
            text_columns=text_columns,
            bool_columns=bool_columns,
        )
    )
    return rows


def _staged_text_column(column: str) -> sql.Composable:
    """The run file's value of a text column as qfdmo_acteur stores it. The run files write "not
    given" as '' everywhere; the webapp's lieu_prestation says it with NULL ('' is not one of its
    choices), the other text columns with ''."""
    if column == "lieu_prestation":
        return sql.SQL("nullif(r.lieu_prestation, '') AS lieu_prestation")
    return sql.SQL("r.{}").format(sql.Identifier(column))


def _check(
    conn: psycopg.Connection,
    second_conn: psycopg.Connection | None,
    t: _Tables,
    source_codes: list[str] | tuple[str, ...] | frozenset[str],
) -> None:
    """Unknown codes were rejected upstream; one that slips through stops the run here, before
    anything is written to the qfdmo tables. Also indexes and analyses the staged tables.

    The acteurs' checks and the sets' checks read different tables: with `second_conn` they run
    at the same time."""
    acteurs_problems, sets_problems = _side_by_side(conn, second_conn, _check_acteurs, _check_sets, t, source_codes)
    problems = acteurs_problems + sets_problems
    if problems:
        raise StagingError("; ".join(problems))


def _check_acteurs(
    cur: psycopg.Cursor, t: _Tables, source_codes: list[str] | tuple[str, ...] | frozenset[str]
) -> list[str]:
    problems: list[str] = []
    limited = [(c, n) for c, n in _TEXT_COLUMNS if n is not None]
    choices = webapp_choices()
    checks = sql.SQL(", ").join(
        [
            sql.SQL("count(*) FILTER (WHERE coalesce(identifiant_unique, '') = '')"),
            sql.SQL("count(*) FILTER (WHERE coalesce(source_code, '') = '')"),
            sql.SQL("count(*) FILTER (WHERE coalesce(acteur_type_code, '') = '')"),
            sql.SQL("count(*) FILTER (WHERE NOT (source_code = ANY(%(sources)s)))"),
            sql.SQL("count(*) FILTER (WHERE source_id IS NULL AND coalesce(source_code, '') <> '')"),
            sql.SQL("count(*) FILTER (WHERE acteur_type_id IS NULL AND coalesce(acteur_type_code, '') <> '')"),
            *(
                sql.SQL("count(*) FILTER (WHERE length({c}) > {n})").format(c=sql.Identifier(c), n=sql.Literal(n))
                for c, n in limited
            ),
            *(
                sql.SQL("count(*) FILTER (WHERE NOT ({c} = ANY({allowed})))").format(
                    c=sql.Identifier(c), allowed=sql.Literal(list(allowed))
                )
                for c, allowed in choices.items()
            ),
        ]
    )
    counts = cur.execute(_q("SELECT {checks} FROM {a}", checks=checks, a=t.acteurs), {"sources": list(source_codes)})
    no_id, no_source, no_type, foreign, unknown_source, unknown_type, *rest = one_row(counts)
    too_long, outside_choices = rest[: len(limited)], rest[len(limited) :]
    if no_id or no_source or no_type:
        problems.append(
            f"missing values: identifiant_unique x{no_id}, source_code x{no_source}, acteur_type_code x{no_type}"
        )
    if foreign:
        problems.append(f"{foreign} acteurs of sources outside the run's sources {sorted(source_codes)}")
    overflow = [f"{c} > {n} chars x{k}" for (c, n), k in zip(limited, too_long, strict=True) if k]
    if overflow:
        problems.append("values too long for qfdmo_acteur: " + ", ".join(overflow))
    for (column, allowed), count in zip(choices.items(), outside_choices, strict=True):
        if count:
            problems.append(_values_outside(cur, t.acteurs, column, allowed, count))
    if unknown_source:
        problems.append(_unknown_codes(cur, "source_code", t.acteurs_raw, "qfdmo_source"))
    if unknown_type:
        problems.append(_unknown_codes(cur, "acteur_type_code", t.acteurs_raw, "qfdmo_acteurtype"))

    # qfdmo_acteur allows one ACTIF acteur per (source, identifiant_externe): say which ones
    # collide instead of failing later on the unique index.
    cur.execute(
        _q(
            "SELECT source_code, identifiant_externe, count(*) FROM {a}"
            " GROUP BY source_code, identifiant_externe HAVING count(*) > 1 ORDER BY 3 DESC, 1, 2 LIMIT 5",
            a=t.acteurs,
        )
    )
    collisions = cur.fetchall()
    if collisions:
        problems.append(
            "several identifiant_unique share a (source, identifiant_externe): "
            + ", ".join(f"{src}/{ext!r} x{n}" for src, ext, n in collisions)
        )
    if not problems:
        cur.execute(_q("ALTER TABLE {a} ADD PRIMARY KEY (identifiant_unique)", a=t.acteurs))
        # Statistics of the join key only: enough for the planner, much cheaper than all columns.
        cur.execute(_q("ANALYZE {a} (identifiant_unique)", a=t.acteurs))
    return problems


def _check_sets(
    cur: psycopg.Cursor, t: _Tables, source_codes: list[str] | tuple[str, ...] | frozenset[str]
) -> list[str]:
    """Unresolved codes of the propositions, labels and services, and rows of them whose
    identifiant_unique has no acteur line (one pass over each table)."""
    problems: list[str] = []
    sets = [
        (
            t.propositions,
            "propositions",
            [
                ("action_id IS NULL", "action_code", t.propositions_raw, "qfdmo_action"),
                ("-1 = ANY(souscategorie_ids)", "sous_categorie_code", t.propositions_raw, "qfdmo_souscategorieobjet"),
            ],
        ),
        (t.labels, "labels", [("labelqualite_id IS NULL", "label_code", t.labels_raw, "qfdmo_labelqualite")]),
        (
            t.services,
            "services",
            [("acteurservice_id IS NULL", "acteur_service_code", t.services_raw, "qfdmo_acteurservice")],
        ),
    ]
    orphans: list[str] = []
    for table, name, unresolved in sets:
        conditions = sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE " + condition + ")") for condition, *_ in unresolved
        )
        # The anti-join in a subquery of its own: inside FILTER it would run once per row.
        without_acteur, *unresolved_counts = one_row(cur.execute(
            _q(
                "SELECT (SELECT count(*) FROM {x} x WHERE NOT EXISTS"
                "          (SELECT FROM {a} a WHERE a.identifiant_unique = x.identifiant_unique)),"
                " {conditions} FROM {x}",
                a=t.acteurs_raw,
                x=table,
                conditions=conditions,
            )
        ))
        if without_acteur:
            orphans.append(f"{without_acteur} {name}")
        for count, (_, column, raw, ref) in zip(unresolved_counts, unresolved, strict=True):
            if count:
                problems.append(_unknown_codes(cur, column, raw, ref))
        cur.execute(_q("ANALYZE {x} (identifiant_unique)", x=table))
    if orphans:
        problems.append(f"{', '.join(orphans)} of an identifiant_unique without acteur line")
    return problems


def _values_outside(cur: psycopg.Cursor, acteurs: sql.Composable, column: str, allowed: tuple[str, ...],
                    count: int) -> str:
    """Rare path: name the values of `column` that are not among the webapp's choices."""
    cur.execute(
        _q(
            "SELECT {c}, count(*) FROM {a} WHERE NOT ({c} = ANY(%s)) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
            c=sql.Identifier(column),
            a=acteurs,
        ),
        (list(allowed),),
    )
    values = ", ".join(f"{v!r} x{n}" for v, n in cur.fetchall())
    return f"{count} values of {column} are not among the webapp's choices {list(allowed)}: {values}"


def _unknown_codes(cur: psycopg.Cursor, column: str, raw: sql.Composable, ref: str) -> str:
    """Rare path: name the unknown codes of `column` with their counts."""
    cur.execute(
        _q(
            "SELECT r.{c}, count(*) FROM {raw} r LEFT JOIN {ref} x ON x.code = r.{c}"
            " WHERE x.id IS NULL AND coalesce(r.{c}, '') <> ''"
            " GROUP BY r.{c} ORDER BY count(*) DESC, r.{c} LIMIT 20",
            c=sql.Identifier(column),
            raw=raw,
            ref=sql.Identifier(ref),
        )
    )
    return f"unknown {column}: " + ", ".join(f"{v!r} x{n}" for v, n in cur.fetchall())


# ---------------------------------------------------------------------- diff


def diff(
    conn: psycopg.Connection, run_key: str, source_codes: list[str] | tuple[str, ...] | frozenset[str]
) -> DiffResult:
    """Recompute the diff of a staged run against the current database."""
    with conn.transaction(), conn.cursor() as cur:
        _session_settings(cur)
        return _diff(cur, _tables(run_key), source_codes)


def _diff(cur: psycopg.Cursor, t: _Tables, source_codes: list[str] | tuple[str, ...] | frozenset[str]) -> DiffResult:
    managed = _column_list("a")
    staged = _column_list("m")
    _staged_signatures(cur, t)
    cur.execute(_q("DROP TABLE IF EXISTS {d}", d=t.diff))
    # One row per new/changed/inactive staged acteur and per ACTIF acteur of the sources
    # that left the feed.
    cur.execute(
        _q(
            """
            CREATE UNLOGGED TABLE {d} WITH (autovacuum_enabled = false) AS
            WITH db_sig AS ({db_signatures})
            SELECT * FROM (
                SELECT m.identifiant_unique,
                       CASE
                           WHEN a.identifiant_unique IS NULL THEN 'new'
                           WHEN a.statut = 'INACTIF' THEN 'inactive'
                           WHEN a.statut <> 'ACTIF'
                                OR ({managed}) IS DISTINCT FROM ({staged})
                                OR coalesce(sig.value, 0) <> coalesce(db_sig.value, 0) THEN 'changed'
                       END AS kind
                FROM {a} m
                LEFT JOIN qfdmo_acteur a ON a.identifiant_unique = m.identifiant_unique
                LEFT JOIN db_sig ON db_sig.acteur = m.identifiant_unique
                LEFT JOIN {sets} sig ON sig.identifiant_unique = m.identifiant_unique
            ) staged
            WHERE kind IS NOT NULL  -- unchanged acteurs are only counted
            UNION ALL
            SELECT a.identifiant_unique, 'to_deactivate'
            FROM qfdmo_acteur a
            JOIN qfdmo_source s ON s.id = a.source_id
            WHERE s.code = ANY(%(sources)s) AND a.statut = 'ACTIF'
              AND NOT EXISTS (SELECT FROM {a} m WHERE m.identifiant_unique = a.identifiant_unique)
            """,
            d=t.diff,
            a=t.acteurs,
            sets=t.sets,
            managed=managed,
            staged=staged,
            db_signatures=_set_signatures(
                propositions=_q(
                    "SELECT ps.acteur_id AS acteur, ps.action_id FROM qfdmo_propositionservice ps"
                    " JOIN {a} m ON m.identifiant_unique = ps.acteur_id",
                    a=t.acteurs,
                ),
                sous_categories=_q(
                    "SELECT ps.acteur_id AS acteur, ps.action_id, psc.souscategorieobjet_id AS souscategorie_id"
                    " FROM qfdmo_propositionservice ps JOIN {a} m ON m.identifiant_unique = ps.acteur_id"
                    " JOIN qfdmo_propositionservice_sous_categories psc ON psc.propositionservice_id = ps.id",
                    a=t.acteurs,
                ),
                labels=_q(
                    "SELECT x.acteur_id AS acteur, x.labelqualite_id FROM qfdmo_acteur_labels x"
                    " JOIN {a} m ON m.identifiant_unique = x.acteur_id",
                    a=t.acteurs,
                ),
                services=_q(
                    "SELECT x.acteur_id AS acteur, x.acteurservice_id FROM qfdmo_acteur_acteur_services x"
                    " JOIN {a} m ON m.identifiant_unique = x.acteur_id",
                    a=t.acteurs,
                ),
            ),
        ),
        {"sources": list(source_codes)},
    )
    cur.execute(_q("ANALYZE {d}", d=t.diff))
    counts: dict[str, int] = dict(cur.execute(_q("SELECT kind, count(*) FROM {d} GROUP BY kind", d=t.diff)).fetchall())
    staged_count = one_row(cur.execute(_q("SELECT count(*) FROM {a}", a=t.acteurs)))[0]
    counts["unchanged"] = staged_count - sum(counts.get(k, 0) for k in ("new", "changed", "inactive"))
    active_before = one_row(cur.execute(
        "SELECT count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
        " WHERE s.code = ANY(%s) AND a.statut = 'ACTIF'",
        (list(source_codes),),
    ))[0]
    examples: dict[str, list[str]] = {}
    for kind in ("new", "changed", "to_deactivate", "inactive"):
        if counts.get(kind):
            cur.execute(
                _q("SELECT identifiant_unique FROM {d} WHERE kind = %s LIMIT %s", d=t.diff),
                (kind, EXAMPLES),
            )
            examples[kind] = [r[0] for r in cur.fetchall()]
    return DiffResult(
        new=counts.get("new", 0),
        changed=counts.get("changed", 0),
        unchanged=counts.get("unchanged", 0),
        inactive=counts.get("inactive", 0),
        to_deactivate=counts.get("to_deactivate", 0),
        active_before=active_before,
        examples=examples,
        changed_columns=_changed_columns(cur, t) if counts.get("changed") else {},
    )


def _staged_signatures(cur: psycopg.Cursor, t: _Tables) -> None:
    """Add to the sets table the signature of each staged acteur that exists in qfdmo_acteur
    and has none yet: XOR of 64-bit hashes of its distinct (action), (action, sous-catégorie),
    label and service ids, the same function _diff() applies to the qfdmo tables.

    Order-independent, so no sorting; computed for existing acteurs only (a new acteur has
    nothing to compare with), so a first load computes none. Acteurs without any set get no
    row (their signature is 0). The apply transaction calls it again: only acteurs that
    appeared in qfdmo_acteur since the stage are computed then.
    """
    cur.execute(_q("DROP TABLE IF EXISTS {todo}", todo=t.todo))
    cur.execute(
        _q(
            "CREATE UNLOGGED TABLE {todo} WITH (autovacuum_enabled = false) AS"
            " SELECT m.identifiant_unique FROM {a} m"
            " WHERE EXISTS (SELECT FROM qfdmo_acteur a WHERE a.identifiant_unique = m.identifiant_unique)"
            " AND NOT EXISTS (SELECT FROM {sets} s WHERE s.identifiant_unique = m.identifiant_unique)",
            todo=t.todo,
            a=t.acteurs,
            sets=t.sets,
        )
    )
    todo = cur.rowcount
    staged = one_row(cur.execute(_q("SELECT count(*) FROM {a}", a=t.acteurs)))[0]
    if todo == 0:
        cur.execute(_q("DROP TABLE {todo}", todo=t.todo))
        return
    # Every staged acteur to sign (a re-run of a loaded feed): no need to join each set with the list.
    only = sql.SQL("") if todo == staged else _q(" JOIN {todo} USING (identifiant_unique)", todo=t.todo)
    cur.execute(
        _q(
            "INSERT INTO {sets} (identifiant_unique, value) {signatures}",
            sets=t.sets,
            signatures=_set_signatures(
                propositions=_q(
                    "SELECT identifiant_unique AS acteur, action_id FROM {p}{only}", p=t.propositions, only=only
                ),
                sous_categories=_q(
                    "SELECT identifiant_unique AS acteur, action_id, unnest(souscategorie_ids) AS souscategorie_id"
                    " FROM {p}{only}",
                    p=t.propositions,
                    only=only,
                ),
                labels=_q("SELECT identifiant_unique AS acteur, labelqualite_id FROM {l}{only}", l=t.labels, only=only),
                services=_q(
                    "SELECT identifiant_unique AS acteur, acteurservice_id FROM {s}{only}", s=t.services, only=only
                ),
            ),
        )
    )
    signed = cur.rowcount
    cur.execute(_q("DROP TABLE {todo}", todo=t.todo))
    if signed > 0:
        # Without statistics the planner would take the signatures for a handful of rows.
        cur.execute(_q("ANALYZE {sets}", sets=t.sets))


def _set_signatures(
    propositions: sql.Composable, sous_categories: sql.Composable, labels: sql.Composable, services: sql.Composable
) -> sql.Composed:
    """(acteur, value): per acteur, the XOR of 64-bit hashes of its (action), (action, sous-catégorie),
    label and service ids — one definition for both sides of the diff (the qfdmo tables and the
    staged run), so that their seeds and encodings cannot drift apart. Each argument is a query
    giving `acteur` and the ids: propositions (action_id), sous_categories (action_id,
    souscategorie_id), labels (labelqualite_id), services (acteurservice_id)."""
    return _q(
        """
        SELECT acteur, bit_xor(h) AS value FROM (
            SELECT acteur, hashint8extended(action_id, 1) AS h FROM ({propositions}) x
            UNION ALL
            SELECT acteur, hashint8extended((action_id::bigint << 32) | souscategorie_id, 2)
            FROM ({sous_categories}) x
            UNION ALL
            SELECT acteur, hashint8extended(labelqualite_id, 3) FROM ({labels}) x
            UNION ALL
            SELECT acteur, hashint8extended(acteurservice_id, 4) FROM ({services}) x
        ) h
        GROUP BY acteur
        """,
        propositions=propositions,
        sous_categories=sous_categories,
        labels=labels,
        services=services,
    )


def _changed_columns(cur: psycopg.Cursor, t: _Tables) -> dict[str, int]:
    """Per-column counts over the changed acteurs, for the run report and the approval form."""
    per_column = [
        sql.SQL("count(*) FILTER (WHERE a.{c} IS DISTINCT FROM m.{c})").format(c=sql.Identifier(c))
        if c != "location"
        else sql.SQL("count(*) FILTER (WHERE a.location::bytea IS DISTINCT FROM m.location::bytea)")
        for c in MANAGED_COLUMNS
    ]
    row = one_row(cur.execute(
        _q(
            "SELECT {per_column}, count(*) FILTER (WHERE a.statut = 'SUPPRIME') FROM {d} d"
            " JOIN {a} m ON m.identifiant_unique = d.identifiant_unique"
            " JOIN qfdmo_acteur a ON a.identifiant_unique = d.identifiant_unique"
            " WHERE d.kind = 'changed'",
            per_column=sql.SQL(", ").join(per_column),
            d=t.diff,
            a=t.acteurs,
        )
    ))
    counts = dict(zip((*MANAGED_COLUMNS, "reactivated"), row, strict=True))
    changed = one_row(cur.execute(_q("SELECT count(*) FROM {d} WHERE kind = 'changed'", d=t.diff)))[0]
    # Changed acteurs whose columns and statut are all equal differ by their sets only; others may too.
    scalar_changed = one_row(cur.execute(
        _q(
            "SELECT count(*) FROM {d} d JOIN {a} m ON m.identifiant_unique = d.identifiant_unique"
            " JOIN qfdmo_acteur a ON a.identifiant_unique = d.identifiant_unique"
            " WHERE d.kind = 'changed' AND (a.statut <> 'ACTIF' OR ({managed}) IS DISTINCT FROM ({staged}))",
            d=t.diff,
            a=t.acteurs,
            managed=_column_list("a"),
            staged=_column_list("m"),
        )
    ))[0]
    counts["sets_only"] = changed - scalar_changed
    return {k: v for k, v in counts.items() if v}


def _column_list(alias: str) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
        if c != "location"
        else sql.SQL("{}.location::bytea").format(sql.Identifier(alias))
        for c in MANAGED_COLUMNS
    )


# --------------------------------------------------------------------- apply


def apply(
    conn: psycopg.Connection, run_key: str, source_codes: list[str] | tuple[str, ...] | frozenset[str]
) -> ApplyResult:
    """Write the staged run in one transaction (see the module docstring)."""
    t = _tables(run_key)
    started = time.perf_counter()
    written: dict[str, int] = {}
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in MANAGED_COLUMNS)
    assignments = sql.SQL(", ").join(sql.SQL("{c} = m.{c}").format(c=sql.Identifier(c)) for c in MANAGED_COLUMNS)
    staged_columns = sql.SQL(", ").join(sql.SQL("m.{}").format(sql.Identifier(c)) for c in MANAGED_COLUMNS)
    lap = _Laps()
    with conn.transaction(), conn.cursor() as cur:
        _session_settings(cur)
        # Two runs of the same sources wait for each other instead of interleaving.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(source_codes),))
        lap("lock")
        result = _diff(cur, t, source_codes)
        lap("diff")
        row_checks = _skip_row_by_row_fk_checks(cur)

        cur.execute(
            _q(
                "UPDATE qfdmo_acteur a SET statut = 'SUPPRIME', modifie_le = now()"
                " FROM {d} d WHERE d.kind = 'to_deactivate'"
                " AND a.identifiant_unique = d.identifiant_unique AND a.statut = 'ACTIF'",
                d=t.diff,
            )
        )
        deactivated = cur.rowcount
        lap("deactivate acteurs")
        cur.execute(
            _q(
                "UPDATE qfdmo_acteur a SET {assignments}, statut = 'ACTIF', modifie_le = now()"
                " FROM {m} m JOIN {d} d ON d.identifiant_unique = m.identifiant_unique"
                " WHERE d.kind = 'changed' AND a.identifiant_unique = m.identifiant_unique",
                assignments=assignments,
                m=t.acteurs,
                d=t.diff,
            )
        )
        updated = cur.rowcount
        lap("update changed acteurs")
        # The staged tables are written in key order (byte order: the order of the C.UTF-8 index
        # keys), so that the indexes grow at their right edge. When every staged acteur is written
        # (a first load), they are read as they lie: no join, no sort.
        staged = result.new + result.changed + result.unchanged + result.inactive
        new_rows: sql.Composable
        if result.new == staged:
            new_rows, new_order = sql.SQL(""), sql.SQL("")
        else:
            # A semi-join hashes the narrow diff rows, not the wide staged acteurs.
            new_rows = _q(
                " WHERE EXISTS (SELECT FROM {d} d WHERE d.identifiant_unique = m.identifiant_unique"
                " AND d.kind = 'new')",
                d=t.diff,
            )
            new_order = sql.SQL(' ORDER BY m.identifiant_unique COLLATE "C"')
        cur.execute(
            _q(
                "INSERT INTO qfdmo_acteur (identifiant_unique, {columns}, statut)"
                " SELECT m.identifiant_unique, {staged_columns}, 'ACTIF' FROM {m} m{new_rows}{new_order}",
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
        changed = _q("SELECT identifiant_unique FROM {d} WHERE kind = 'changed'", d=t.diff)
        cur.execute(
            _q(
                "DELETE FROM qfdmo_propositionservice_sous_categories psc"
                " USING qfdmo_propositionservice ps"
                " WHERE psc.propositionservice_id = ps.id AND ps.acteur_id IN ({changed})",
                changed=changed,
            )
        )
        psc_written = cur.rowcount
        cur.execute(_q("DELETE FROM qfdmo_propositionservice WHERE acteur_id IN ({changed})", changed=changed))
        ps_written = cur.rowcount
        cur.execute(_q("DELETE FROM qfdmo_acteur_labels WHERE acteur_id IN ({changed})", changed=changed))
        labels_written = cur.rowcount
        cur.execute(
            _q(
                "DELETE FROM qfdmo_acteur_acteur_services WHERE acteur_id IN ({changed})",
                changed=changed,
            )
        )
        services_written = cur.rowcount
        lap("delete replaced sets")

        written_rows: sql.Composable
        if result.new + result.changed == staged:
            written_rows, written_order = sql.SQL(""), sql.SQL("")
        else:
            written_rows = _q(
                " WHERE x.identifiant_unique IN (SELECT identifiant_unique FROM {d} WHERE kind IN ('new', 'changed'))",
                d=t.diff,
            )
            written_order = sql.SQL(' ORDER BY x.identifiant_unique COLLATE "C", 2')
        # Resolved once: pg_get_serial_sequence() inside the query would run for every row.
        sequence = one_row(cur.execute("SELECT pg_get_serial_sequence('qfdmo_propositionservice', 'id')"))[0]
        # One statement writes both tables: each proposition draws its id once, in
        # (acteur_id, action_id) order so that both indexes of qfdmo_propositionservice and the
        # sous-catégories' one receive their keys in order; the sous-catégories are unnested from
        # the same materialised rows instead of being joined back on (acteur_id, action_id).
        ps_count, psc_count = one_row(cur.execute(
            _q(
                """
                WITH ps AS MATERIALIZED (
                    SELECT nextval({sequence}::regclass)::int AS id, identifiant_unique, action_id,
                           souscategorie_ids
                    FROM (SELECT x.identifiant_unique, x.action_id, x.souscategorie_ids
                          FROM {p} x{written_rows}{written_order}) x
                ), inserted_ps AS (
                    INSERT INTO qfdmo_propositionservice (id, acteur_id, action_id)
                    SELECT id, identifiant_unique, action_id FROM ps
                ), inserted_psc AS (
                    INSERT INTO qfdmo_propositionservice_sous_categories
                        (propositionservice_id, souscategorieobjet_id)
                    SELECT id, unnest(souscategorie_ids) FROM ps
                )
                SELECT count(*), coalesce(sum(cardinality(souscategorie_ids)), 0) FROM ps
                """,
                p=t.propositions,
                written_rows=written_rows,
                written_order=written_order,
                sequence=sql.Literal(sequence),
            )
        ))
        ps_written += ps_count
        psc_written += psc_count
        lap("insert propositions + sous-catégories")
        cur.execute(
            _q(
                "INSERT INTO qfdmo_acteur_labels (acteur_id, labelqualite_id)"
                " SELECT x.identifiant_unique, x.labelqualite_id FROM {l} x{written_rows}{written_order}",
                l=t.labels,
                written_rows=written_rows,
                written_order=written_order,
            )
        )
        labels_written += cur.rowcount
        lap("insert labels")
        cur.execute(
            _q(
                "INSERT INTO qfdmo_acteur_acteur_services (acteur_id, acteurservice_id)"
                " SELECT x.identifiant_unique, x.acteurservice_id FROM {s} x{written_rows}{written_order}",
                s=t.services,
                written_rows=written_rows,
                written_order=written_order,
            )
        )
        services_written += cur.rowcount
        lap("insert acteur_services")
        written["qfdmo_propositionservice"] = ps_written
        written["qfdmo_propositionservice_sous_categories"] = psc_written
        written["qfdmo_acteur_labels"] = labels_written
        written["qfdmo_acteur_acteur_services"] = services_written
        if row_checks:
            # Deferred foreign keys are checked here, still inside the transaction.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            lap("foreign key checks")
        # After a bulk load, autovacuum may not have analysed the tables before the next
        # run plans its diff; stale "empty table" estimates lead to nested loops over 500k rows.
        cur.execute("SET LOCAL default_statistics_target = 30")
        for table, key_columns in _STATISTICS_COLUMNS.items():
            if written.get(table, 0) >= ANALYZE_THRESHOLD:
                cur.execute(f"ANALYZE {table} ({key_columns})")
        lap("analyze")
    lap("commit")
    seconds = time.perf_counter() - started
    log.info("carte apply %s: %s in %.1fs (%s)", run_key, written, seconds,
             ", ".join(f"{k} {v:.1f}s" for k, v in lap.seconds.items()))
    return ApplyResult(diff=result, rows_written=written, seconds=seconds, statement_seconds=lap.seconds)


class _Laps:
    """Seconds since the previous lap, by name: where a long transaction spends its time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


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
            cur.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        log.warning("session_replication_role not allowed: foreign keys checked row by row")
        return True
    for table in _REFERENCED_TABLES:
        cur.execute(sql.SQL("SELECT count(*) FROM (SELECT FROM {} FOR KEY SHARE) x").format(sql.Identifier(table)))
    return False


def drop_staging(conn: psycopg.Connection, run_key: str) -> None:
    """Drop the run's staging tables (no error if they do not exist)."""
    with conn.transaction(), conn.cursor() as cur:
        for table in _tables(run_key).all():
            cur.execute(_q("DROP TABLE IF EXISTS {t}", t=table))
