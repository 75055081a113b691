"""CLI: `python -m qfdmo.carte_db migrate|check-contract [--dsn DSN]` (DSN defaults to $CARTE_DB_DSN)."""

from __future__ import annotations

import argparse
import logging
import sys

from qfdmo.carte_db.contract import CONTRACT_PATH, check_contract
from qfdmo.carte_db.migrate import migrate
from qfdmo.settings import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qfdmo.carte_db")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser("migrate", help="apply pending schema migrations, then upsert the reference data")
    migrate_cmd.add_argument("--dsn", default=settings().carte_db_dsn)
    migrate_cmd.add_argument("--schema-only", action="store_true", help="do not load the reference data")
    migrate_cmd.add_argument(
        "--platform-only",
        action="store_true",
        help="only the platform's own schema (preprod/prod, where the webapp's migrations own the qfdmo_ tables)",
    )
    check_cmd = commands.add_parser("check-contract", help="compare the database's tables with webapp_schema.yml")
    check_cmd.add_argument("--dsn", default=settings().carte_db_dsn)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not args.dsn:
        parser.error("--dsn or CARTE_DB_DSN is required")
    if args.command == "check-contract":
        return check_contract_command(args.dsn)
    applied = migrate(args.dsn, load_reference=not args.schema_only, platform_only=args.platform_only)
    print(f"carte db: {len(applied)} migration(s) applied" + (f": {', '.join(applied)}" if applied else ""))
    return 0


def check_contract_command(dsn: str) -> int:
    """Prints the differences with the webapp's contract; exit status 1 when there are any."""
    differences = check_contract(dsn)
    if not differences:
        print(f"carte db: matches {CONTRACT_PATH.name}")
        return 0
    print(f"carte db: {len(differences)} difference(s) with {CONTRACT_PATH.name} (database != contract):")
    for difference in differences:
        print(f"  {difference}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
