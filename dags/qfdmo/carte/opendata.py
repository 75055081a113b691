"""The weekly open-data file « Longue vie aux objets — acteurs de l'économie circulaire »: streamed
from the dbt model qfdmo_carte.opendata_acteur to CSV, checked, then published to S3 with its
Table Schema (frictionless) beside it."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from qfdmo.carte.dbt_runner import SCHEMA

MODEL = "opendata_acteur"
BUCKET = "qfdmo-opendata"
CURRENT_KEY = "acteurs/acteurs.csv"
SCHEMA_KEY = "acteurs/acteurs.schema.json"
ARCHIVE_PREFIX = "acteurs/archives/"
ARCHIVE_DAYS = 30
MIN_ROWS_SHARE = 0.9
ROWS_METADATA = "rows"  # x-amz-meta-rows on the current file: the next export compares with it

_ACTIONS = ("emprunter", "preter", "louer", "mettreenlocation", "reparer", "donner", "trier", "echanger",
            "revendre", "acheter", "rapporter")
# The 44 columns, in order: (name, Table Schema type, description).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("identifiant", "string", "Identifiant public et stable de l'acteur (22 caractères)"),
    ("paternite", "string", "Paternité : Que faire de mes objets et déchets, l'ADEME et les sources, séparées par |"),
    ("identifiants_des_contributeurs", "string", "Liste JSON de {source : identifiant chez la source}"),
    ("nom", "string", "Nom de l'acteur"),
    ("nom_commercial", "string", "Nom commercial"),
    ("siren", "string", "SIREN"),
    ("siret", "string", "SIRET"),
    ("description", "string", "Description"),
    ("type_dacteur", "string", "Code du type d'acteur"),
    ("site_web", "string", "Site web"),
    ("telephone", "string", "Téléphone (vide pour les numéros mobiles)"),
    ("adresse", "string", "Adresse (vide pour les acteurs qui n'interviennent qu'à domicile)"),
    ("complement_dadresse", "string", "Complément d'adresse"),
    ("code_postal", "string", "Code postal"),
    ("ville", "string", "Ville"),
    ("code_commune", "string", "Code commune INSEE (pas encore renseigné)"),
    ("code_epci", "string", "Code de l'EPCI (pas encore renseigné)"),
    ("nom_epci", "string", "Nom de l'EPCI (pas encore renseigné)"),
    ("latitude", "number", "Latitude (WGS 84)"),
    ("longitude", "number", "Longitude (WGS 84)"),
    ("qualites_et_labels", "string", "Codes des labels, séparés par |"),
    ("public_accueilli", "string", "Public accueilli"),
    ("reprise", "string", "Reprise : 1 pour 0, 1 pour 1"),
    ("exclusivite_de_reprisereparation", "boolean", "Exclusivité de reprise / réparation"),
    ("uniquement_sur_rdv", "boolean", "Uniquement sur rendez-vous"),
    ("type_de_services", "string", "Codes des services, séparés par |"),
    ("consignes_dacces", "string", "Consignes d'accès"),
    ("horaires_description", "string", "Horaires (texte libre)"),
    ("horaires_osm", "string", "Horaires au format OpenStreetMap opening_hours"),
    ("lieu_prestation", "string", "Lieu de prestation : SUR_PLACE, A_DOMICILE, SUR_PLACE_OU_A_DOMICILE"),
    ("perimetreadomicile", "string", "Liste JSON des périmètres d'intervention à domicile {type, valeur}"),
    ("propositions_de_services", "string", "Liste JSON de {action, sous_categories}"),
    *((action, "string", f"Codes des sous-catégories d'objets pour l'action « {action} », séparés par |")
      for action in _ACTIONS),
    ("date_de_derniere_modification", "date", "Date de dernière modification (AAAA-MM-JJ)"),
)
COLUMN_NAMES = tuple(name for name, _, _ in COLUMNS)


class OpenDataCheckError(ValueError):
    """The file is malformed (header, column count): it is not published."""


@dataclass
class Export:
    path: Path
    rows: int
    bytes: int


def export_csv(dsn: str, path: Path) -> Export:
    """Streams the model to `path` (UTF-8, comma, header, ordered by identifiant); no row is held
    in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    query = sql.SQL("COPY (SELECT {cols} FROM {model} ORDER BY identifiant) TO STDOUT"
                    " WITH (FORMAT csv, HEADER true, ENCODING 'UTF8')").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, COLUMN_NAMES)), model=sql.Identifier(SCHEMA, MODEL))
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, path.open("wb") as out:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # the count is the file's
        with cur.copy(query) as copy:
            for block in copy:
                out.write(block)
        rows = int((conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(SCHEMA, MODEL))).fetchone() or (0,))[0])
    return Export(path=path, rows=rows, bytes=path.stat().st_size)


def check_csv(path: Path, previous_rows: int | None, min_share: float = MIN_ROWS_SHARE) -> dict[str, Any]:
    """Header and column count of every row (raises OpenDataCheckError), then the row count against
    the previous export: below `min_share` of it, a person must approve."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != COLUMN_NAMES:
            raise OpenDataCheckError(f"{path.name}: header is not the 44 open-data columns: {header}")
        rows = 0
        for number, row in enumerate(reader, start=2):
            if len(row) != len(COLUMN_NAMES):
                raise OpenDataCheckError(f"{path.name} line {number}: {len(row)} columns instead of 44")
            rows += 1
    share = rows / previous_rows if previous_rows else None
    return {
        "rows": rows,
        "columns": len(COLUMN_NAMES),
        "previous_rows": previous_rows,
        "share_of_previous": round(share, 4) if share is not None else None,
        "min_share": min_share,
        "needs_approval": share is not None and share < min_share,
    }


def table_schema() -> dict[str, Any]:
    """The file's Table Schema (frictionless), so that data portals can validate it."""
    return {
        "$schema": "https://specs.frictionlessdata.io/schemas/table-schema.json",
        "name": "acteurs-economie-circulaire",
        "title": "Longue vie aux objets — acteurs de l'économie circulaire",
        "fields": [{"name": name, "type": kind, "description": description} for name, kind, description in COLUMNS],
        "primaryKey": ["identifiant"],
        "missingValues": [""],
    }


def previous_rows(client: Any, bucket: str = BUCKET) -> int | None:
    """Rows of the file currently published (its metadata), None when there is none."""
    try:
        head = client.head_object(Bucket=bucket, Key=CURRENT_KEY)
    except client.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    value = (head.get("Metadata") or {}).get(ROWS_METADATA)
    return int(value) if value and value.isdigit() else None


_ARCHIVE_KEY = re.compile(r"acteurs_(\d{8}T\d{6}Z)\.csv$")


def publish(client: Any, export: Export, bucket: str = BUCKET, now: datetime | None = None) -> dict[str, Any]:
    """Timestamped copy first, then the public `acteurs/acteurs.csv` (a server-side copy of it) and
    its Table Schema; copies older than ARCHIVE_DAYS are removed last."""
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    archive = f"{ARCHIVE_PREFIX}acteurs_{stamp}.csv"
    metadata = {ROWS_METADATA: str(export.rows)}
    client.upload_file(str(export.path), bucket, archive,
                       ExtraArgs={"ContentType": "text/csv; charset=utf-8", "Metadata": metadata})
    client.copy_object(Bucket=bucket, Key=CURRENT_KEY, CopySource={"Bucket": bucket, "Key": archive},
                       ACL="public-read", ContentType="text/csv; charset=utf-8", Metadata=metadata,
                       MetadataDirective="REPLACE")
    client.put_object(Bucket=bucket, Key=SCHEMA_KEY, ACL="public-read", ContentType="application/json",
                      Body=json.dumps(table_schema(), ensure_ascii=False, indent=2).encode())
    removed = []
    limit = now - timedelta(days=ARCHIVE_DAYS)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ARCHIVE_PREFIX):
        for item in page.get("Contents", []):
            match = _ARCHIVE_KEY.search(item["Key"])
            when = (datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) if match
                    else item["LastModified"])
            if when < limit:
                client.delete_object(Bucket=bucket, Key=item["Key"])
                removed.append(item["Key"])
    return {"bucket": bucket, "archive": archive, "current": CURRENT_KEY, "schema": SCHEMA_KEY,
            "removed": removed, "rows": export.rows, "bytes": export.bytes}
