"""The staging tables of one ingestion run, and the settings of the transactions that use them.

A run's tables live in schema ``qfdmo_staging``, suffixed by the run key, UNLOGGED and without
autovacuum: they are written once, read a few times and dropped by ``drop_staging``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

STAGING_SCHEMA = "qfdmo_staging"
# Large enough for the hash joins/aggregates of ~500k acteurs to stay in memory.
WORK_MEM = "256MB"

SourceCodes = list[str] | tuple[str, ...] | frozenset[str]


@dataclass(frozen=True)
class RunTables:
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

    def merged(self) -> list[sql.Composable]:
        """The tables stage() builds from the raw ones."""
        return [table for name, table in self.__dict__.items() if not name.endswith("_raw")]


def staging_suffix(run_key: str) -> str:
    """A safe identifier suffix for run_key (stable, at most 48 characters)."""
    cleaned = re.sub(r"[^0-9a-z_]+", "_", run_key.lower()).strip("_")
    if cleaned == run_key and len(cleaned) <= 48:
        return cleaned
    digest = hashlib.blake2b(run_key.encode(), digest_size=4).hexdigest()
    return f"{cleaned[:39]}_{digest}"


def run_tables(run_key: str) -> RunTables:
    suffix = staging_suffix(run_key)

    def name(prefix: str) -> sql.Composable:
        return sql.Identifier(STAGING_SCHEMA, f"{prefix}_{suffix}")

    return RunTables(
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


def lock_key(source_codes: Iterable[str]) -> int:
    """The advisory lock of a set of sources: two runs of the same sources apply one after the other."""
    digest = hashlib.blake2b(",".join(sorted(source_codes)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def session_settings(cur: psycopg.Cursor) -> None:
    """Settings of one stage/diff/apply transaction."""
    cur.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    # JIT compiles each big statement again (~0.8 s for the staged acteurs alone) for
    # plans that are I/O and hash bound: it costs more than it saves here.
    cur.execute("SET LOCAL jit = off")


def staging_settings(cur: psycopg.Cursor) -> None:
    session_settings(cur)
    # Staging statistics only guide joins: a small sample is enough and much cheaper.
    cur.execute("SET LOCAL default_statistics_target = 10")
    # The staging already runs on two connections of a 2-core machine: parallel workers would only
    # compete with them, each rebuilding the same sort or hash (the raw tables have no statistics).
    cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")


def drop_staging(conn: psycopg.Connection, run_key: str) -> None:
    """Drop the run's staging tables (no error if they do not exist)."""
    with conn.transaction(), conn.cursor() as cur:
        for table in run_tables(run_key).all():
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


class Laps:
    """Seconds since the previous lap, by name: where a long transaction spends its time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now
