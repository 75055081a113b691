"""A source DAG on the CeleryExecutor, its tasks spread over two "machines" (the session's
`celery_stack`: two workers, each with its own data directory, scratch and hostname): a first load
with bad rows, then a changed feed. The tasks of each run are found on both workers, and the carte
DB ends exactly as the same two feeds leave it through the pipeline's functions on one machine (what
the LocalExecutor runs).

The spread is made deterministic without sleeping: only one worker consumes the default queue at a
time (Celery's remote control, `cancel_consumer` / `add_consumer`), and the test moves the queue to
the other worker while a task of the run waits for a lock the test holds — an ACCESS EXCLUSIVE lock
on `qfdmo_source` (check_feed reads it) and the apply's advisory lock. So download and check_feed run
on one machine, normalise to apply on the other (the feed crosses in S3, the rows in staging), and
announce_change, report and cleanup back on the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fakes import fixture_rows
from fakes.feed_server import FeedServer
from stack_runs import wait_while_running

from devstack.config import RUNS_BUCKET

SOURCE, DAG_ID, DATASET = "soren", "source_soren", "donnees-eo-soren"
QUEUE = "default"  # Airflow's [operators] default_queue, the only queue the workers consume


@pytest.fixture(scope="module")
def portal() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


def _feeds() -> tuple[list[dict], list[dict]]:
    """Refashion's fixture rows as Soren's feed (16 rows, 3 rejected), then the same feed changed:
    one point renamed, the last row (a rejected one) gone."""
    first = fixture_rows("refashion.json")
    changed = [dict(row) for row in first[:-1]]
    changed[4]["nom_de_lorganisme"] = "Relais Textile Exempleville Centre"
    return first, changed


@contextlib.contextmanager
def _queue_on(stack, worker: str) -> Iterator[Callable[[str], None]]:
    """Only `worker` consumes the default queue; yields `move(worker)`; both consume it afterwards."""
    from celery import Celery

    host = os.uname().nodename
    names = stack.worker_names()
    app = Celery(broker=stack.config.broker_url)

    def move(to: str) -> None:
        app.control.add_consumer(QUEUE, destination=[f"{to}@{host}"], reply=True)
        others = [f"{name}@{host}" for name in names if name != to]
        app.control.cancel_consumer(QUEUE, destination=others, reply=True)

    try:
        move(worker)
        yield move
    finally:
        app.control.add_consumer(QUEUE, destination=[f"{name}@{host}" for name in names], reply=True)
        app.close()


def _waiting(dsn: str, condition: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND database = "
            f"(SELECT oid FROM pg_database WHERE datname = current_database()) AND {condition}").fetchone()[0] > 0


def _report(s3, run_id: str) -> dict:
    from qfdmo.pipeline.paths import safe_name

    key = f"reports/{DAG_ID}/{safe_name(run_id)}.json"
    return json.loads(s3.get_object(Bucket=RUNS_BUCKET, Key=key)["Body"].read())


def _run_across(stack, url: str, first: str, second: str) -> str:
    """One run: download and check_feed on `first`, normalise to apply on `second`, the rest on `first`."""
    from qfdmo.carte_db.run_tables import lock_key

    dsn = stack.carte_dsn
    with _queue_on(stack, first) as move, psycopg.connect(dsn, autocommit=True) as locks:
        locks.execute("SELECT pg_advisory_lock(%s)", (lock_key([SOURCE]),))
        try:
            with locks.transaction():
                locks.execute("LOCK TABLE qfdmo_source IN ACCESS EXCLUSIVE MODE")
                run_id = stack.trigger(DAG_ID, {"endpoint_url": url})
                wait_while_running(stack, DAG_ID, run_id, lambda: _waiting(dsn, "relation = 'qfdmo_source'::regclass"),
                                   "check_feed to wait for qfdmo_source", interval=0.3)
                move(second)
            wait_while_running(stack, DAG_ID, run_id, lambda: _waiting(dsn, "locktype = 'advisory'"),
                               "apply to wait for its lock", interval=0.3)
            move(first)
        finally:
            locks.execute("SELECT pg_advisory_unlock(%s)", (lock_key([SOURCE]),))
        assert stack.wait_for_run(DAG_ID, run_id, timeout=600) == "success"
    return run_id


DIGEST = """
SELECT a.identifiant_unique,
       (to_jsonb(a) - 'cree_le' - 'modifie_le' - 'source_id' - 'acteur_type_id' - 'action_principale_id')::text,
       src.code, t.code, ap.code,
       (SELECT coalesce(jsonb_agg(jsonb_build_array(ac.code, (SELECT jsonb_agg(sc.code ORDER BY sc.code)
                FROM qfdmo_propositionservice_sous_categories pss
                JOIN qfdmo_souscategorieobjet sc ON sc.id = pss.souscategorieobjet_id
                WHERE pss.propositionservice_id = ps.id)) ORDER BY ac.code), '[]')::text
          FROM qfdmo_propositionservice ps JOIN qfdmo_action ac ON ac.id = ps.action_id
         WHERE ps.acteur_id = a.identifiant_unique),
       (SELECT coalesce(jsonb_agg(l.code ORDER BY l.code), '[]')::text FROM qfdmo_acteur_labels al
          JOIN qfdmo_labelqualite l ON l.id = al.labelqualite_id WHERE al.acteur_id = a.identifiant_unique),
       (SELECT coalesce(jsonb_agg(s.code ORDER BY s.code), '[]')::text FROM qfdmo_acteur_acteur_services aas
          JOIN qfdmo_acteurservice s ON s.id = aas.acteurservice_id WHERE aas.acteur_id = a.identifiant_unique)
  FROM qfdmo_acteur a JOIN qfdmo_source src ON src.id = a.source_id
  JOIN qfdmo_acteurtype t ON t.id = a.acteur_type_id LEFT JOIN qfdmo_action ap ON ap.id = a.action_principale_id
 WHERE src.code = %s ORDER BY a.identifiant_unique
"""


def _carte_state(dsn: str) -> tuple[list[tuple], str]:
    """The source's acteurs with their propositions, labels and services, by codes (timestamps left
    out: they are the times of each run; ids of reference rows as codes), and a digest of it."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(DIGEST, (SOURCE,)).fetchall()
    return rows, hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _one_machine(stack, url: str, feeds: tuple[list[dict], list[dict]], portal: FeedServer, tmp_path) -> str:
    """The same two feeds through the pipeline's functions, one after the other on this machine, into a
    fresh carte database: what the LocalExecutor runs. Returns its DSN."""
    from qfdmo.pipeline import LocalRunData, apply, check_feed, download, finish, normalise, stage
    from qfdmo.sources import load_declarations

    from devstack.stack import migrate_carte_db

    postgres = stack.stack.postgres
    postgres.create_database("carte_local_executor", postgis=True)
    dsn = postgres.dsn("carte_local_executor")
    migrate_carte_db(dsn)
    declaration = load_declarations()[SOURCE]
    for n, rows in enumerate(feeds):
        portal.set_dataset(DATASET, rows)
        data, key = LocalRunData(tmp_path / f"run{n}"), f"local_run{n}"
        downloaded = download(declaration, url, data)
        checked = check_feed(declaration, data, dsn, downloaded)
        normalised = normalise(declaration, data, key, dsn, scratch_base=tmp_path)
        staged = stage(declaration, key, dsn, 0.1)
        assert not staged.needs_approval
        apply(declaration, key, dsn, checked, normalised, staged)
        finish(key, dsn, data, settled=True)
    return dsn


def test_a_source_run_spreads_over_two_machines_and_ends_as_on_one(celery_stack, portal, tmp_path):
    stack = celery_stack
    stack.wait_for_dag(DAG_ID)
    url = portal.datafair_url(DATASET, size="5")
    feeds = _feeds()
    workers = stack.worker_names()
    s3 = stack.stack.s3.client()

    runs = []
    # The changed feed lacks the last row, one of the three rejected ones.
    for rows, (first, second), rejected in zip(feeds, (workers, workers[::-1]), (3, 2), strict=True):
        portal.set_dataset(DATASET, rows)
        run_id = _run_across(stack, url, first, second)
        runs.append(run_id)
        where = {row.task_id: row.worker for row in stack.task_instances(DAG_ID, run_id)}
        assert {where[t] for t in ("download", "check_feed", "announce_change", "report", "cleanup")} == {first}, where
        assert {where[t] for t in ("normalise", "stage_and_diff", "guard", "apply")} == {second}, where
        report = _report(s3, run_id)
        assert report["outcome"] == "applied" and report["counts"]["rejected"] == rejected, report
        # Settled: nothing of the run is left in S3 but its report, nor on either machine's disk.
        prefix = f"runs/{DAG_ID}/"
        assert s3.list_objects_v2(Bucket=RUNS_BUCKET, Prefix=prefix).get("KeyCount", 0) == 0
        for worker in workers:
            left = [p for folder in ("runs", "scratch", "reports")
                    for p in (stack.worker_data_dir(worker) / folder).rglob("*") if p.is_file()]
            assert left == [], left
    changed = _report(s3, runs[1])
    assert changed["counts"]["changed"] >= 1, changed

    celery_state, celery_digest = _carte_state(stack.carte_dsn)
    local_state, local_digest = _carte_state(_one_machine(stack, url, feeds, portal, tmp_path))
    assert len(celery_state) >= 12 and celery_state == local_state and celery_digest == local_digest
