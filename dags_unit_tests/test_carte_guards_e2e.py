"""compute_acteurs and export_opendata end to end through the test stack's running scheduler: new
acteurs reach qfdmo_displayedacteur with their public uuid, the CSV and its schema reach the bucket,
public; then their guards, a person answering the approval form through the REST API as the UI does
(under `dags test` a human-in-the-loop task waits forever): the displayed acteurs would fall by more
than max_drop_share, or the export has far fewer rows than the file published last; Reject →
nothing swapped / published, the webapp's tables and the public file exactly as they were; Approve →
swapped / published."""

from __future__ import annotations

import csv
import io
import json

import boto3
import psycopg
import shortuuid
from fakes.carte_rows import CarteRows
from qfdmo.carte.opendata import COLUMN_NAMES, CURRENT_KEY, SCHEMA_KEY
from qfdmo.pipeline.paths import safe_name
from stack_runs import answer_approval, report_of, set_paused, succeeded, task_state, trigger, wait_idle

from devstack.config import RUNS_BUCKET, S3_DEV_KEY_ID, S3_DEV_KEY_SECRET

PREFIX = "guard_e2e_"
GONE = [f"{PREFIX}{i}" for i in range(3)]
# New acteurs that stay, on a source no source DAG of this stack ingests (a run of theirs would
# deactivate them).
SHOWN = ["e2e_carte_un", "e2e_carte_deux"]
SHOWN_SOURCE = "ecodds"
EXPORTED = "e2e_opendata"


def _displayed_snapshot(conn: psycopg.Connection) -> list[tuple]:
    """Every row of the displayed acteurs and their propositions, to prove 'nothing changed'."""
    return conn.execute(
        "SELECT row_to_json(d)::text, (SELECT count(*) FROM qfdmo_displayedpropositionservice p"
        " WHERE p.acteur_id = d.identifiant_unique) FROM qfdmo_displayedacteur d ORDER BY d.identifiant_unique"
    ).fetchall()


def _displayed_ids(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT identifiant_unique FROM qfdmo_displayedacteur")}


def _run(stack, dag_id: str, conf: dict, choice: str) -> tuple[str, dict, dict]:
    """A run that asks for approval, answered `choice`; returns (run id, the form, the run's report)."""
    run_id = trigger(stack, dag_id, conf)
    form = answer_approval(stack, dag_id, run_id, choice)
    assert succeeded(stack, dag_id, run_id)
    return run_id, form, report_of(stack, dag_id, run_id)


def test_compute_acteurs_guard_rejected_then_approved(airflow_stack):
    stack, dsn = airflow_stack, airflow_stack.carte_dsn
    dag_id = "compute_acteurs"
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = CarteRows(conn)
        for identifiant in GONE:
            rows.acteur(identifiant, source="valdelia")
            rows.proposition(identifiant, "reparer", ["ecran"])
        for identifiant in SHOWN:
            rows.acteur(identifiant, source=SHOWN_SOURCE)
            rows.proposition(identifiant, "reparer", ["ecran"])
    try:
        # The starting carte, ours on it (no guard: whatever earlier tests changed); then whatever
        # the unpause started (queued asset events) has settled too.
        setup = trigger(stack, dag_id, {"max_drop_share": 1})
        assert succeeded(stack, dag_id, setup)
        report = report_of(stack, dag_id, setup)
        assert report["outcome"] == "swapped"
        assert report["rows_after"]["qfdmo_displayedacteur"] >= len(SHOWN) + len(GONE)
        assert report["statistics"]["displayed_by_source"][SHOWN_SOURCE] == len(SHOWN)
        with psycopg.connect(dsn) as conn:
            shown = dict(conn.execute("SELECT identifiant_unique, uuid FROM qfdmo_displayedacteur"
                                      " WHERE identifiant_unique = ANY(%s)", (SHOWN,)).fetchall())
        assert shown == {name: shortuuid.uuid(name=name) for name in SHOWN}  # the public uuid
        wait_idle(stack, dag_id)
        with psycopg.connect(dsn, autocommit=True) as conn:
            before = _displayed_snapshot(conn)
            shown_before = _displayed_ids(conn)
            assert set(GONE) <= shown_before
            # Their source's feed dropped them (as a source run sets them).
            conn.execute("UPDATE qfdmo_acteur SET statut = 'SUPPRIME' WHERE identifiant_unique = ANY(%s)", (GONE,))

        conf = {"max_drop_share": 0, "approval_timeout": 600}  # any drop needs a person
        rejected, form, report = _run(stack, dag_id, conf, "Reject")
        assert "Approve to replace qfdmo_displayed*" in form["body"]
        assert report["outcome"] == "not swapped: rejected"
        assert task_state(stack, dag_id, rejected, "swap") == "skipped"
        with psycopg.connect(dsn) as conn:
            assert _displayed_snapshot(conn) == before

        _, _, report = _run(stack, dag_id, conf, "Approve")
        assert report["outcome"] == "swapped"
        with psycopg.connect(dsn) as conn:
            assert _displayed_ids(conn) == shown_before - set(GONE)
    finally:
        set_paused(stack, dag_id, True)
        wait_idle(stack, dag_id)


def test_export_opendata_guard_rejected_then_approved(airflow_stack):
    stack, dag_id = airflow_stack, "export_opendata"
    bucket = "qfdmo-opendata-guard-e2e"  # not the stack's open-data bucket, which other tests read
    s3 = boto3.client("s3", endpoint_url=stack.s3_endpoint_url, aws_access_key_id=S3_DEV_KEY_ID,
                      aws_secret_access_key=S3_DEV_KEY_SECRET, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    # Last week's file had a million rows: this week's few hundred are far below 90 % of it.
    s3.put_object(Bucket=bucket, Key=CURRENT_KEY, Body=b"last week\n", Metadata={"rows": "1000000"})
    published = s3.head_object(Bucket=bucket, Key=CURRENT_KEY)
    conf = {"bucket": bucket, "approval_timeout": 600}
    with psycopg.connect(stack.carte_dsn, autocommit=True) as conn:
        rows = CarteRows(conn)
        rows.acteur(EXPORTED, source=SHOWN_SOURCE)
        rows.proposition(EXPORTED, "reparer", ["ecran"])
    try:
        rejected, form, report = _run(stack, dag_id, conf, "Reject")
        assert "instead of 1000000 last time" in form["body"]
        assert report["outcome"] == "not published: rejected"
        assert task_state(stack, dag_id, rejected, "publish") == "skipped"
        assert s3.head_object(Bucket=bucket, Key=CURRENT_KEY)["ETag"] == published["ETag"]
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="acteurs/archives/")

        approved, _, report = _run(stack, dag_id, conf, "Approve")
        assert report["outcome"] == "published"
        # The file went from task to task through the run's data in S3, removed once published.
        assert report["export"]["location"].endswith(f"/export_opendata/{safe_name(approved)}/acteurs.csv")
        runs = stack.stack.s3.client().list_objects_v2(Bucket=RUNS_BUCKET, Prefix="runs/export_opendata/")
        assert not [o["Key"] for o in runs.get("Contents", []) if safe_name(approved) in o["Key"]]
        current = s3.get_object(Bucket=bucket, Key=CURRENT_KEY)
        table = list(csv.reader(io.StringIO(current["Body"].read().decode("utf-8"))))
        assert tuple(table[0]) == COLUMN_NAMES
        assert current["Metadata"]["rows"] == str(report["export"]["rows"]) == str(len(table) - 1)
        assert shortuuid.uuid(name=EXPORTED) in {row[0] for row in table[1:]}  # its public uuid
        schema = json.loads(s3.get_object(Bucket=bucket, Key=SCHEMA_KEY)["Body"].read())
        assert [f["name"] for f in schema["fields"]] == list(COLUMN_NAMES)
        grants = s3.get_object_acl(Bucket=bucket, Key=CURRENT_KEY)["Grants"]
        assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)
        archives = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="acteurs/archives/")["Contents"]]
        assert archives == [report["publish"]["archive"]]
    finally:
        set_paused(stack, dag_id, True)
        wait_idle(stack, dag_id)
