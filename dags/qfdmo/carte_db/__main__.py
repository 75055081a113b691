"""CLI: `python -m qfdmo.carte_db migrate [--dsn DSN]` (DSN defaults to $CARTE_DB_DSN)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from qfdmo.carte_db.migrate import migrate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qfdmo.carte_db")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser("migrate", help="apply pending schema migrations, then upsert the reference data")
    migrate_cmd.add_argument("--dsn", default=os.environ.get("CARTE_DB_DSN"))
    migrate_cmd.add_argument("--schema-only", action="store_true", help="do not load the reference data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.dsn:
        parser.error("--dsn or CARTE_DB_DSN is required")
    applied = migrate(args.dsn, load_reference=not args.schema_only)
    print(f"carte db: {len(applied)} migration(s) applied" + (f": {', '.join(applied)}" if applied else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
