"""The "unchanged input" fast path: skip normalise/stage/apply when a run would write nothing.

After a successful apply the pipeline records, per source DAG, a fingerprint of everything that
decides what the run writes (the feed's rows in order, the endpoint URL, the declaration, the
mappings and code of normalisation/staging, the reference codes, SINOE's nomenclature) and a cheap
witness of the carte DB state of the source's acteurs right after the apply. A later run whose
fingerprint and witness are both identical would diff every acteur as unchanged: it is skipped.

Any doubt means the full path: no record, a record that cannot be read, another witness (someone
or something touched the acteurs since), any other input. The record lives in the platform's own
schema of the carte database (table created by the carte migrations, never at run time).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

UNCHANGED_REASON = "unchanged feed: nothing to do"
FINGERPRINT_FILE = "fingerprint.json"
RECORD_TABLE = "qfdmo_platform.applied_feed"

_QFDMO_DIR = Path(__file__).resolve().parent.parent
# Everything that turns feed rows into carte rows: code, mappings, declarations, reference data.
_CODE_DIRS = ("sources", "carte_db", "pipeline", "feeds")
_CODE_SUFFIXES = {".py", ".csv", ".sql", ".yaml", ".yml", ".json"}


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
    *, feed: str, endpoint_url: str, declaration: dict[str, Any], reference: dict[str, Iterable[str]],
    nomenclature: str, code: str,
) -> str:
    """One hash of all the inputs of a run (any difference gives another fingerprint)."""
    parts = {
        "feed": feed,
        "endpoint_url": endpoint_url,
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


def read_record(conn: psycopg.Connection, source: str) -> dict[str, Any] | None:
    """The record of the source's last applied run, or None (no table, no row, unreadable)."""
    try:
        row = conn.execute(
            f"SELECT fingerprint, witness, summary FROM {RECORD_TABLE} WHERE source = %s", (source,)
        ).fetchone()
    except psycopg.Error as exc:  # database not migrated, or no rights: full path
        log.info("no applied-feed record readable for %s (%s): full path", source, exc.__class__.__name__)
        return None
    if row is None:
        return None
    return {"fingerprint": row[0], "witness": row[1], "summary": json.loads(row[2])}


def write_record(conn: psycopg.Connection, source: str, fingerprint: str, witness_text: str,
                 summary: dict[str, Any]) -> None:
    """Upsert the source's row (own transaction)."""
    with conn.transaction():
        conn.execute(
            f"INSERT INTO {RECORD_TABLE} (source, fingerprint, witness, summary) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (source) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "witness = EXCLUDED.witness, summary = EXCLUDED.summary, applied_at = now()",
            (source, fingerprint, witness_text, json.dumps(summary, default=str)),
        )


def forget_record(conn: psycopg.Connection, source: str) -> None:
    """Drop the source's record so that its next run takes the full path."""
    try:
        with conn.transaction():
            conn.execute(f"DELETE FROM {RECORD_TABLE} WHERE source = %s", (source,))
    except psycopg.Error:
        pass  # no table: nothing recorded
