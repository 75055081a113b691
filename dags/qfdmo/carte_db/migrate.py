"""Versioned schema migrations of the carte database.

`migrations/NNNN_<name>.sql` files are applied in order, each in its own
transaction, and recorded in `carte_schema_migrations`; applied files are
skipped, so `migrate()` can run at every start. A session-level advisory lock
keeps two concurrent `migrate()` calls from applying the same file twice.
After the schema, the reference data is upserted (idempotent as well).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

from qfdmo.carte_db.reference import load_reference_data

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant shared by every migrate() caller.
_MIGRATION_LOCK_KEY = 7_146_201_001
_MIGRATION_FILE = re.compile(r"^(\d{4})_[0-9a-z_]+\.sql$")

log = logging.getLogger(__name__)


def migration_files(migrations_dir: Path = MIGRATIONS_DIR) -> list[Path]:
    """Migration files sorted by version; rejects misnamed files and duplicate versions."""
    files = sorted(p for p in migrations_dir.iterdir() if p.suffix == ".sql")
    versions: set[str] = set()
    for path in files:
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file name must be NNNN_snake_case.sql: {path.name}")
        if match.group(1) in versions:
            raise ValueError(f"two migrations share version {match.group(1)}")
        versions.add(match.group(1))
    return files


def migrate(dsn: str, load_reference: bool = True) -> list[str]:
    """Apply pending migrations then the reference data; returns the applied file names."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS carte_schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {name for (name,) in conn.execute("SELECT name FROM carte_schema_migrations")}
            for path in migration_files():
                if path.name in done:
                    continue
                log.info("applying carte migration %s", path.name)
                with conn.transaction():
                    conn.execute(path.read_text(encoding="utf-8"))
                    conn.execute("INSERT INTO carte_schema_migrations (name) VALUES (%s)", (path.name,))
                applied_now.append(path.name)
            if load_reference:
                written = load_reference_data(conn)
                log.info("reference data loaded (%d rows written)", written)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied_now
