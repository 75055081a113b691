"""The open-data file: its 44 columns, the checks before publication, the Table Schema, and the
publication on a real S3 API (moto's server)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from qfdmo.carte.opendata import (
    ARCHIVE_PREFIX,
    COLUMN_NAMES,
    CURRENT_KEY,
    SCHEMA_KEY,
    Export,
    OpenDataCheckError,
    check_csv,
    previous_rows,
    publish,
    table_schema,
)

DOC_ORDER = (
    "identifiant paternite identifiants_des_contributeurs nom nom_commercial siren siret description type_dacteur "
    "site_web telephone adresse complement_dadresse code_postal ville code_commune code_epci nom_epci latitude "
    "longitude qualites_et_labels public_accueilli reprise exclusivite_de_reprisereparation uniquement_sur_rdv "
    "type_de_services consignes_dacces horaires_description horaires_osm lieu_prestation perimetreadomicile "
    "propositions_de_services emprunter preter louer mettreenlocation reparer donner trier echanger revendre "
    "acheter rapporter date_de_derniere_modification"
).split()


def _write(path: Path, header: list[str], rows: int, width: int = 44) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for n in range(rows):
            writer.writerow([f"v{n}"] * width)
    return path


def test_the_44_columns_in_the_order_of_the_dataset():
    assert list(COLUMN_NAMES) == DOC_ORDER
    schema = table_schema()
    assert [f["name"] for f in schema["fields"]] == DOC_ORDER
    assert all(f["type"] and f["description"] for f in schema["fields"])


def test_check_accepts_a_good_file_and_asks_below_90_percent(tmp_path):
    path = _write(tmp_path / "a.csv", DOC_ORDER, 89)
    assert check_csv(path, None)["needs_approval"] is False
    assert check_csv(path, 98)["needs_approval"] is False
    verdict = check_csv(path, 100)
    assert verdict["needs_approval"] is True and verdict["rows"] == 89 and verdict["share_of_previous"] == 0.89


def test_check_refuses_a_wrong_header_or_a_short_row(tmp_path):
    with pytest.raises(OpenDataCheckError, match="header"):
        check_csv(_write(tmp_path / "h.csv", DOC_ORDER[:-1], 1, width=43), None)
    with pytest.raises(OpenDataCheckError, match="line 2: 43 columns"):
        check_csv(_write(tmp_path / "r.csv", DOC_ORDER, 1, width=43), None)


def test_publish_archives_then_replaces_the_public_file_and_prunes_old_copies(s3_server, tmp_path):
    client = s3_server.client()
    bucket = "opendata-test"
    client.create_bucket(Bucket=bucket)
    now = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    old = _write(tmp_path / "old.csv", DOC_ORDER, 5)
    publish(client, Export(path=old, rows=5, bytes=old.stat().st_size), bucket, now=now - timedelta(days=31))
    publish(client, Export(path=old, rows=5, bytes=old.stat().st_size), bucket, now=now - timedelta(days=7))
    assert previous_rows(client, bucket) == 5
    new = _write(tmp_path / "new.csv", DOC_ORDER, 7)
    result = publish(client, Export(path=new, rows=7, bytes=new.stat().st_size), bucket, now=now)
    assert result["removed"] == [f"{ARCHIVE_PREFIX}acteurs_20261106T000000Z.csv"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"{ARCHIVE_PREFIX}acteurs_20261130T000000Z.csv", f"{ARCHIVE_PREFIX}acteurs_20261207T000000Z.csv",
                    SCHEMA_KEY, CURRENT_KEY}
    assert client.get_object(Bucket=bucket, Key=CURRENT_KEY)["Body"].read() == new.read_bytes()
    assert previous_rows(client, bucket) == 7
    grants = client.get_object_acl(Bucket=bucket, Key=CURRENT_KEY)["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("AllUsers") and g["Permission"] == "READ" for g in grants)


def test_previous_rows_is_none_before_the_first_export(s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket="opendata-empty")
    assert previous_rows(client, "opendata-empty") is None
