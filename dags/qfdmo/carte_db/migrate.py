"""Versioned schema migrations of the carte database.

Two series of `NNNN_<name>.sql` files, each applied in order, each file in its own transaction:

* `migrations/`: the webapp's tables (`qfdmo_*`), as the webapp's Django migrations create them
  (the contract: `webapp_schema.yml`). Locally and in tests the platform creates them itself; in
  preprod and prod the webapp owns them and they are skipped (`platform_only=True`).
* `platform_migrations/`: the platform's own schema `qfdmo_platform` (and `qfdmo_staging`),
  applied everywhere.

Applied files are recorded in `qfdmo_platform.schema_migrations` (`platform/` before the name for
the second series) and skipped, so `migrate()` can run at every start. A session-level advisory
lock keeps two concurrent `migrate()` calls from applying the same file twice. After the schema,
the reference data is upserted (idempotent as well; not with `platform_only`: the webapp's
administrators own it there).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

from qfdmo.carte_db.queries import one_row
from qfdmo.carte_db.reference import load_reference_data

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
PLATFORM_MIGRATIONS_DIR = Path(__file__).parent / "platform_migrations"
PLATFORM_SCHEMA = "qfdmo_platform"
_BOOKKEEPING = f"{PLATFORM_SCHEMA}.schema_migrations"
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


def pending_series(platform_only: bool = False) -> list[tuple[str, Path]]:
    """(recorded name, file) of every migration, webapp tables first (the platform's may refer to them)."""
    series = [] if platform_only else [(p.name, p) for p in migration_files(MIGRATIONS_DIR)]
    return series + [(f"platform/{p.name}", p) for p in migration_files(PLATFORM_MIGRATIONS_DIR)]


def migrate(dsn: str, load_reference: bool = True, platform_only: bool = False) -> list[str]:
    """Apply pending migrations then the reference data; returns the applied file names."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            _prepare_bookkeeping(conn)
            done = {name for (name,) in conn.execute(f"SELECT name FROM {_BOOKKEEPING}")}
            for name, path in pending_series(platform_only):
                if name in done:
                    continue
                log.info("applying carte migration %s", name)
                with conn.transaction():
                    conn.execute(path.read_text(encoding="utf-8"))
                    conn.execute(f"INSERT INTO {_BOOKKEEPING} (name) VALUES (%s)", (name,))
                applied_now.append(name)
            if load_reference and not platform_only:
                written = load_reference_data(conn)
                log.info("reference data loaded (%d rows written)", written)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))
    return applied_now


def _prepare_bookkeeping(conn: psycopg.Connection) -> None:
    """Create the bookkeeping table, or move it out of the webapp's schema where an older version
    of this module created it (public.carte_schema_migrations)."""
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PLATFORM_SCHEMA}")
        legacy = one_row(conn.execute("SELECT to_regclass('public.carte_schema_migrations')"))[0]
        current = one_row(conn.execute(f"SELECT to_regclass('{_BOOKKEEPING}')"))[0]
        if legacy and not current:
            conn.execute(f"ALTER TABLE public.carte_schema_migrations SET SCHEMA {PLATFORM_SCHEMA}")
            conn.execute(f"ALTER TABLE {PLATFORM_SCHEMA}.carte_schema_migrations RENAME TO schema_migrations")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_BOOKKEEPING} ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
