"""compute_acteurs and export_opendata through the real Airflow CLI (`bin/airflow dags test`) on
the throwaway stack: the new acteur reaches qfdmo_displayedacteur, the CSV reaches the bucket."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import boto3
import psycopg
import shortuuid
from fakes.carte_rows import CarteRows
from qfdmo.carte.opendata import COLUMN_NAMES

from devstack.config import OPENDATA_BUCKET, S3_DEV_KEY_ID, S3_DEV_KEY_SECRET


SOURCE = "ecodds"


def _dags_test(stack, dag_id: str) -> dict:
    folder = Path(stack.env["QFDMO_DATA_DIR"]) / "reports" / dag_id
    before = set(folder.glob("*.json")) if folder.exists() else set()
    result = stack.airflow("dags", "test", dag_id, timeout=900)
    created = sorted(set(folder.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    assert result.returncode == 0 and created, f"{result.stdout[-6000:]}\n{result.stderr[-4000:]}"
    return json.loads(created[-1].read_text())


def test_compute_acteurs_then_export_opendata(airflow_stack):
    with psycopg.connect(airflow_stack.carte_dsn, autocommit=True) as conn:
        rows = CarteRows(conn)
        for name in ("e2e_carte_un", "e2e_carte_deux"):
            # A source no source DAG of this stack ingests (a refashion run would deactivate them).
            rows.acteur(name, source=SOURCE)
            rows.proposition(name, "reparer", ["ecran"])

    report = _dags_test(airflow_stack, "compute_acteurs")
    assert report["outcome"] == "swapped"
    assert report["rows_after"]["qfdmo_displayedacteur"] >= 2
    assert report["statistics"]["displayed_by_source"][SOURCE] >= 2
    with psycopg.connect(airflow_stack.carte_dsn) as conn:
        shown = {r[0]: r[1] for r in conn.execute(
            "SELECT identifiant_unique, uuid FROM qfdmo_displayedacteur WHERE identifiant_unique LIKE 'e2e_carte_%'")}
    assert shown == {name: shortuuid.uuid(name=name) for name in ("e2e_carte_un", "e2e_carte_deux")}

    exported = _dags_test(airflow_stack, "export_opendata")
    assert exported["outcome"] == "published"
    s3 = boto3.client("s3", endpoint_url=airflow_stack.s3_endpoint_url, aws_access_key_id=S3_DEV_KEY_ID,
                      aws_secret_access_key=S3_DEV_KEY_SECRET, region_name="us-east-1")
    body = s3.get_object(Bucket=OPENDATA_BUCKET, Key="acteurs/acteurs.csv")["Body"].read().decode("utf-8")
    table = list(csv.reader(io.StringIO(body)))
    assert tuple(table[0]) == COLUMN_NAMES
    assert {shortuuid.uuid(name="e2e_carte_un"), shortuuid.uuid(name="e2e_carte_deux")} <= {r[0] for r in table[1:]}
    schema = json.loads(s3.get_object(Bucket=OPENDATA_BUCKET, Key="acteurs/acteurs.schema.json")["Body"].read())
    assert [f["name"] for f in schema["fields"]] == list(COLUMN_NAMES)
    archives = s3.list_objects_v2(Bucket=OPENDATA_BUCKET, Prefix="acteurs/archives/")["Contents"]
    assert len(archives) == 1
    grants = s3.get_object_acl(Bucket=OPENDATA_BUCKET, Key="acteurs/acteurs.csv")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)
