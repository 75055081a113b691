"""The "unchanged feed" fast path: one decision, right after the download.

After a successful apply the pipeline records, per source, a fingerprint of everything that decides
what a run writes (the feed's rows in order with the endpoint URL, the declaration, the code and
mappings of normalisation/staging, the reference codes, SINOE's nomenclature) and a cheap witness of
the carte state of the source's acteurs right after the apply. A later run whose fingerprint and
witness are both identical would diff every acteur as unchanged: `check` says so, and the DAG skips
normalise, stage, guard and apply (its report says "unchanged").

Any doubt means the full path: no record, a record that cannot be read, another witness (someone
or something touched the acteurs since), any other input. The record lives in the platform's own
schema of the carte database (qfdmo_platform.applied_feed, created by the platform migrations).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pydantic

from qfdmo.pipeline.results import AppliedFeed, Downloaded, FeedCheck

log = logging.getLogger(__name__)

UNCHANGED_REASON = "unchanged feed: nothing to do"
RECORD_TABLE = "qfdmo_platform.applied_feed"

_QFDMO_DIR = Path(__file__).resolve().parent.parent
# Everything that turns feed rows into carte rows: code, mappings, declarations, reference data.
_CODE_DIRS = ("sources", "carte_db", "pipeline", "feeds")
_CODE_SUFFIXES = {".py", ".csv", ".sql", ".yaml", ".yml", ".json"}


@dataclass(frozen=True)
class Record:
    """One row of qfdmo_platform.applied_feed."""

    fingerprint: str
    witness: str
    summary: AppliedFeed
    applied_at: str


def code_version() -> str:
    """sha256 of the normalisation, staging/apply, feed and pipeline source files."""
    digest = hashlib.sha256()
    for name in _CODE_DIRS:
        for path in sorted((_QFDMO_DIR / name).rglob("*")):
            if path.suffix in _CODE_SUFFIXES and path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(_QFDMO_DIR)).encode())
                digest.update(b"\0")
                digest.update(path.read_bytes())
                digest.update(b"\0")
    return digest.hexdigest()


def run_fingerprint(
    *, feed: str, declaration: dict[str, Any], reference: dict[str, Iterable[str]], nomenclature: str, code: str,
) -> str:
    """One hash of all the inputs of a run (any difference gives another fingerprint)."""
    parts = {
        "feed": feed,
        "declaration": declaration,
        "reference": {kind: sorted(codes) for kind, codes in sorted(reference.items())},
        "nomenclature": nomenclature,
        "code": code,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def witness(conn: psycopg.Connection, source_codes: Iterable[str]) -> str:
    """A cheap summary of the sources' acteurs: count and latest modifie_le per statut."""
    rows = conn.execute(
        "SELECT a.statut, count(*), max(a.modifie_le)::text, max(a.cree_le)::text "
        "FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
        "WHERE s.code = ANY(%s) GROUP BY a.statut ORDER BY a.statut",
        (sorted(source_codes),),
    ).fetchall()
    return json.dumps([list(row) for row in rows])


def active_count(witness_text: str) -> int:
    return sum(row[1] for row in json.loads(witness_text) if row[0] == "ACTIF")


def check(
    conn: psycopg.Connection,
    *,
    source: str,
    source_codes: Iterable[str],
    downloaded: Downloaded,
    declaration: dict[str, Any],
    reference: dict[str, Iterable[str]],
    nomenclature: str,
) -> FeedCheck:
    """Compare the run's inputs and the acteurs' state with the source's last applied run."""
    fingerprint = run_fingerprint(
        feed=downloaded.feed_sha256, declaration=declaration, reference=reference, nomenclature=nomenclature,
        code=code_version(),
    )
    record = read_record(conn, source)
    if record is None:
        return FeedCheck(fingerprint=fingerprint, unchanged=False, reason="no applied run recorded: full path")
    if record.fingerprint != fingerprint:
        return FeedCheck(fingerprint=fingerprint, unchanged=False, reason="new input: full path")
    current = witness(conn, source_codes)
    if record.witness != current:
        return FeedCheck(fingerprint=fingerprint, unchanged=False,
                         reason="same input, but the acteurs changed since the last apply: full path")
    return FeedCheck(fingerprint=fingerprint, unchanged=True, reason=UNCHANGED_REASON, previous=record.summary,
                     active=active_count(current), applied_at=record.applied_at)


def read_record(conn: psycopg.Connection, source: str) -> Record | None:
    """The record of the source's last applied run, or None (no table, no row, unreadable)."""
    try:
        row = conn.execute(
            f"SELECT fingerprint, witness, summary, applied_at::text FROM {RECORD_TABLE} WHERE source = %s",
            (source,),
        ).fetchone()
    except psycopg.Error as exc:  # database not migrated, or no rights: full path
        log.info("no applied-feed record readable for %s (%s): full path", source, exc.__class__.__name__)
        return None
    if row is None:
        return None
    try:
        summary = AppliedFeed.model_validate_json(row[2])
    except pydantic.ValidationError:  # written by an older version: full path, then rewritten
        log.info("applied-feed record of %s in an older shape: full path", source)
        return None
    return Record(fingerprint=row[0], witness=row[1], summary=summary, applied_at=row[3])


def write_record(conn: psycopg.Connection, source: str, fingerprint: str, witness_text: str,
                 summary: AppliedFeed) -> None:
    """Upsert the source's row (own transaction)."""
    with conn.transaction():
        conn.execute(
            f"INSERT INTO {RECORD_TABLE} (source, fingerprint, witness, summary) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (source) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "witness = EXCLUDED.witness, summary = EXCLUDED.summary, applied_at = now()",
            (source, fingerprint, witness_text, summary.model_dump_json()),
        )


def forget_record(conn: psycopg.Connection, source: str) -> None:
    """Drop the source's record so that its next run takes the full path."""
    try:
        with conn.transaction():
            conn.execute(f"DELETE FROM {RECORD_TABLE} WHERE source = %s", (source,))
    except psycopg.Error:
        pass  # no table: nothing recorded
