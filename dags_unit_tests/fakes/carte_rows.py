"""Writes small, readable carte contents (acteurs, revisions, their relations) for the tests of
the carte computation: one call per row, codes instead of ids."""

from __future__ import annotations

from typing import Any

import psycopg

PARIS = (2.3522, 48.8566)


class CarteRows:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self._ids: dict[tuple[str, str], int] = {}

    def id_of(self, table: str, code: str) -> int:
        key = (table, code)
        if key not in self._ids:
            row = self.conn.execute(f"SELECT id FROM {table} WHERE code = %s", (code,)).fetchone()
            assert row, f"{table}: no code {code}"
            self._ids[key] = row[0]
        return self._ids[key]

    def _row(self, table: str, values: dict[str, Any]) -> None:
        location = values.pop("location", None)
        columns = list(values)
        placeholders = ["%s"] * len(columns)
        params = list(values.values())
        if location is not None:
            columns.append("location")
            placeholders.append("ST_SetSRID(ST_MakePoint(%s, %s), 4326)::geography")
            params += list(location)
        self.conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(placeholders)})", params)

    def _resolve(self, fields: dict[str, Any]) -> dict[str, Any]:
        if "type" in fields:
            code = fields.pop("type")
            fields["acteur_type_id"] = None if code is None else self.id_of("qfdmo_acteurtype", code)
        if "source" in fields:
            code = fields.pop("source")
            fields["source_id"] = None if code is None else self.id_of("qfdmo_source", code)
        return fields

    def acteur(self, identifiant: str, **fields: Any) -> str:
        values = {"identifiant_unique": identifiant, "nom": identifiant, "identifiant_externe": identifiant,
                  "type": "commerce", "source": "refashion", "location": PARIS,
                  "public_accueilli": "Particuliers", "reprise": "", "adresse": "1 rue de la Paix",
                  "code_postal": "75002", "ville": "Paris", **fields}
        self._row("qfdmo_acteur", self._resolve(values))
        return identifiant

    def revision(self, identifiant: str, **fields: Any) -> str:
        values = {"identifiant_unique": identifiant, "public_accueilli": "", "reprise": "", **fields}
        self._row("qfdmo_revisionacteur", self._resolve(values))
        return identifiant

    def parent(self, identifiant: str, **fields: Any) -> str:
        """A dedup parent: revision-only, no source."""
        values = {"nom": f"Parent {identifiant}", "type": "commerce", "location": PARIS,
                  "public_accueilli": "Particuliers", "statut": "ACTIF", **fields}
        return self.revision(identifiant, **values)

    def proposition(self, identifiant: str, action: str, sous_categories: list[str],
                    revision: bool = False) -> int:
        prefix = "qfdmo_revision" if revision else "qfdmo_"
        table = f"{prefix}propositionservice"
        row = self.conn.execute(
            f"INSERT INTO {table} (acteur_id, action_id) VALUES (%s, %s) RETURNING id",
            (identifiant, self.id_of("qfdmo_action", action))).fetchone()
        assert row
        for code in sous_categories:
            self.conn.execute(
                f"INSERT INTO {table}_sous_categories ({table.removeprefix('qfdmo_')}_id, souscategorieobjet_id)"
                " VALUES (%s, %s)", (row[0], self.id_of("qfdmo_souscategorieobjet", code)))
        return int(row[0])

    def labels(self, identifiant: str, codes: list[str], revision: bool = False) -> None:
        table, column = (("qfdmo_revisionacteur_labels", "revisionacteur_id") if revision
                         else ("qfdmo_acteur_labels", "acteur_id"))
        for code in codes:
            self.conn.execute(f"INSERT INTO {table} ({column}, labelqualite_id) VALUES (%s, %s)",
                              (identifiant, self.id_of("qfdmo_labelqualite", code)))

    def services(self, identifiant: str, codes: list[str], revision: bool = False) -> None:
        table, column = (("qfdmo_revisionacteur_acteur_services", "revisionacteur_id") if revision
                         else ("qfdmo_acteur_acteur_services", "acteur_id"))
        for code in codes:
            self.conn.execute(f"INSERT INTO {table} ({column}, acteurservice_id) VALUES (%s, %s)",
                              (identifiant, self.id_of("qfdmo_acteurservice", code)))

    def perimetre(self, identifiant: str, type_: str, valeur: str, revision: bool = False) -> None:
        table = "qfdmo_revisionperimetreadomicile" if revision else "qfdmo_perimetreadomicile"
        self.conn.execute(f"INSERT INTO {table} (acteur_id, type, valeur) VALUES (%s, %s, %s)",
                          (identifiant, type_, valeur))
