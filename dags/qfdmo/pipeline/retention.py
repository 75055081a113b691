"""How long a source run's data outlives the run.

A run that ends well (applied, unchanged, rejected, timed out) has its data removed by its own
cleanup. A failed run's data is kept `QFDMO_FAILED_RUN_RETENTION_DAYS` days (7 by default) for
diagnosis: its cleanup records it in qfdmo_platform.kept_run, and the cleanup of every later run (of
any source) sweeps the records past their date, data first, then the record. The record lives in
the carte database, which every machine reaches: the sweep needs no shared disk, and two cleanups
sweeping at once skip each other's rows (`FOR UPDATE SKIP LOCKED`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import psycopg

from qfdmo.pipeline.run_data import RunData

log = logging.getLogger(__name__)

TABLE = "qfdmo_platform.kept_run"
SWEEP_BATCH = 100


def keep(conn: psycopg.Connection, run: RunData, dag_id: str, run_id: str, outcome: str, days: float) -> datetime:
    """Record that `run`'s data is kept `days` days; until when."""
    with conn.transaction():
        row = conn.execute(
            f"INSERT INTO {TABLE} (location, dag_id, run_id, outcome, kept_until) "
            "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (location) DO UPDATE SET outcome = EXCLUDED.outcome, kept_since = now(), "
            "kept_until = EXCLUDED.kept_until RETURNING kept_until",
            (run.location, dag_id, run_id, outcome, days * 86_400),
        ).fetchone()
    assert row is not None
    kept_until: datetime = row[0]
    return kept_until


def release(conn: psycopg.Connection, run: RunData) -> None:
    """Forget a kept run (its data was removed: a failed run cleared and re-run to its end)."""
    with conn.transaction():
        conn.execute(f"DELETE FROM {TABLE} WHERE location = %s", (run.location,))


def sweep(conn: psycopg.Connection, run_at: Callable[[str], RunData]) -> int:
    """Remove the data of the kept runs past their date (`run_at(location)` gives a run's data),
    then their records; the number of runs swept. A record whose data cannot be removed stays for
    the next sweep."""
    swept = 0
    while True:
        with conn.transaction():
            locations = [row[0] for row in conn.execute(
                f"SELECT location FROM {TABLE} WHERE kept_until <= now() ORDER BY kept_until "
                "LIMIT %s FOR UPDATE SKIP LOCKED", (SWEEP_BATCH,)).fetchall()]
            done = []
            for location in locations:
                try:
                    run_at(location).delete()
                except Exception as exc:  # one bad location must not stop the sweep
                    log.warning("could not remove the kept run data at %s: %s", location, exc)
                    continue
                done.append(location)
            conn.execute(f"DELETE FROM {TABLE} WHERE location = ANY(%s)", (done,))
        swept += len(done)
        if len(locations) < SWEEP_BATCH or not done:
            return swept
