"""Fills a carte database for the clustering's integration tests and benchmark: acteurs in
qfdmo_acteur (what sources deliver) and, as compute_acteurs would compute it, the exhaustive view
qfdmo_vueacteur, which is all the clustering reads — without a dbt build per test (or of 500,000
acteurs in the benchmark). The end-to-end test (test_dedup_dags_e2e.py) runs the real compute_acteurs
instead.

Rows are the generator's (fakes.dedup_acteurs): source_id / acteur_type_id 1..n are mapped to the
n first ids of the reference data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

ACTEUR_COLUMNS = ("identifiant_unique", "nom", "acteur_type_id", "adresse", "adresse_complement", "code_postal",
                  "ville", "url", "email", "telephone", "siren", "siret", "source_id", "identifiant_externe",
                  "statut", "public_accueilli", "reprise", "location")
VUE_COLUMNS = ACTEUR_COLUMNS + ("uuid", "code_commune_insee", "parent_id", "revision_existe", "est_parent",
                                "est_dans_carte", "est_dans_opendata", "latitude", "longitude", "nombre_enfants")


def reference_ids(conn: psycopg.Connection) -> tuple[list[int], list[int], dict[str, int]]:
    """(source ids, acteur type ids, source code -> id), in id order."""
    sources = conn.execute("SELECT id, code FROM qfdmo_source ORDER BY id").fetchall()
    types = [r[0] for r in conn.execute("SELECT id FROM qfdmo_acteurtype ORDER BY id").fetchall()]
    return [r[0] for r in sources], types, {code: i for i, code in sources}


def _location(row: dict[str, Any]) -> str | None:
    if row.get("latitude") is None or row.get("longitude") is None:
        return None
    return f"SRID=4326;POINT({row['longitude']} {row['latitude']})"


def insert_acteurs(conn: psycopg.Connection, rows: Iterable[dict[str, Any]], *, with_acteurs: bool = True) -> int:
    """COPY generator rows into qfdmo_acteur and qfdmo_vueacteur (ACTIF orphans unless the row says
    otherwise: `statut`, `parent_id`); the view only with with_acteurs=False (the benchmark: the
    clustering reads nothing else)."""
    source_ids, type_ids, _ = reference_ids(conn)
    acteurs, vue = [], []
    for row in rows:
        source = source_ids[row["source_id"] - 1] if isinstance(row.get("source_id"), int) else None
        values = {
            "identifiant_unique": row["identifiant_unique"], "nom": row["nom"],
            "acteur_type_id": type_ids[row["acteur_type_id"] - 1], "adresse": row.get("adresse", ""),
            "adresse_complement": row.get("adresse_complement", ""), "code_postal": row.get("code_postal", ""),
            "ville": row.get("ville", ""), "url": row.get("url", ""), "email": row.get("email", ""),
            "telephone": row.get("telephone", ""), "siren": row.get("siren", ""), "siret": row.get("siret", ""),
            "source_id": source, "identifiant_externe": row["identifiant_unique"],
            "statut": row.get("statut", "ACTIF"), "public_accueilli": "", "reprise": "", "location": _location(row),
        }
        acteurs.append(tuple(values[c] for c in ACTEUR_COLUMNS))
        vue.append(tuple(values[c] for c in ACTEUR_COLUMNS) + (
            row["identifiant_unique"], "", row.get("parent_id"), row.get("parent_id") is not None, False, True,
            False, row.get("latitude"), row.get("longitude"), None))
    with conn.cursor() as cur:
        if with_acteurs:
            with cur.copy(f"COPY qfdmo_acteur ({', '.join(ACTEUR_COLUMNS)}) FROM STDIN") as copy:
                for values in acteurs:
                    copy.write_row(values)
        with cur.copy(f"COPY qfdmo_vueacteur ({', '.join(VUE_COLUMNS)}) FROM STDIN") as copy:
            for values in vue:
                copy.write_row(values)
    return len(acteurs)


def insert_parent(conn: psycopg.Connection, identifiant: str, nom: str, children: list[str], *,
                  acteur_type_id: int = 1, statut: str = "ACTIF", **fields: Any) -> None:
    """A parent (revision-only row) and the children's revisions pointing to it, in the base tables
    and in the view (children must be inserted already)."""
    _, type_ids, _ = reference_ids(conn)
    type_id = type_ids[acteur_type_id - 1]
    lat, lon = fields.pop("latitude", None), fields.pop("longitude", None)
    location = _location({"latitude": lat, "longitude": lon})
    conn.execute(
        "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, acteur_type_id, statut, public_accueilli,"
        " reprise, adresse, code_postal, ville, location) VALUES (%s, %s, %s, %s, '', '', %s, %s, %s, %s)",
        (identifiant, nom, type_id, statut, fields.get("adresse", ""), fields.get("code_postal", ""),
         fields.get("ville", ""), location))
    conn.execute(
        "INSERT INTO qfdmo_vueacteur (identifiant_unique, nom, acteur_type_id, statut, public_accueilli, reprise,"
        " adresse, code_postal, ville, location, latitude, longitude, uuid, code_commune_insee, revision_existe,"
        " est_parent, est_dans_carte, est_dans_opendata, nombre_enfants, liste_enfants)"
        " VALUES (%s, %s, %s, %s, '', '', %s, %s, %s, %s, %s, %s, %s, '', true, true, true, false, %s, %s)",
        (identifiant, nom, type_id, statut, fields.get("adresse", ""), fields.get("code_postal", ""),
         fields.get("ville", ""), location, lat, lon, identifiant, len(children),
         psycopg.types.json.Jsonb(children)))
    for child in children:
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, acteur_type_id, statut, public_accueilli, reprise,"
            " parent_id) SELECT identifiant_unique, acteur_type_id, statut, '', '', %s FROM qfdmo_acteur"
            " WHERE identifiant_unique = %s", (identifiant, child))
        conn.execute("UPDATE qfdmo_vueacteur SET parent_id = %s, revision_existe = true WHERE identifiant_unique = %s",
                     (identifiant, child))

