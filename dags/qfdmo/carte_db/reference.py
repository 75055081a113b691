"""Reference data of the carte database (codes of sources, actions, sous-catégories…).

The data lives in `reference/*.csv` (our own format: one file per table, natural
keys as codes, M2M links as code pairs). `load_reference_data(conn)` upserts it
idempotently: each file is COPYed into a temporary table, then
`INSERT … ON CONFLICT (code) DO UPDATE … WHERE <something differs>`, so a re-run
writes nothing and rows that are not in the files are never deleted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import psycopg

REFERENCE_DIR = Path(__file__).parent / "reference"


@dataclass(frozen=True)
class ReferenceCodes:
    """Codes known to the carte database, used to validate a feed before staging it."""

    sources: frozenset[str]
    acteur_types: frozenset[str]
    actions: frozenset[str]
    sous_categories: frozenset[str]
    labels: frozenset[str]
    acteur_services: frozenset[str]


# ReferenceCodes field -> (table, reference file)
_CODE_SOURCES = {
    "sources": ("qfdmo_source", "sources.csv"),
    "acteur_types": ("qfdmo_acteurtype", "acteur_types.csv"),
    "actions": ("qfdmo_action", "actions.csv"),
    "sous_categories": ("qfdmo_souscategorieobjet", "sous_categories.csv"),
    "labels": ("qfdmo_labelqualite", "labels.csv"),
    "acteur_services": ("qfdmo_acteurservice", "acteur_services.csv"),
}


def load_reference_codes(conn: psycopg.Connection) -> ReferenceCodes:
    """Codes currently in the database (they may include codes added by the webapp)."""
    values = {}
    for field, (table, _) in _CODE_SOURCES.items():
        rows = conn.execute(f"SELECT code FROM {table}").fetchall()
        values[field] = frozenset(code for (code,) in rows)
    return ReferenceCodes(**values)


def reference_codes_from_files(reference_dir: Path = REFERENCE_DIR) -> ReferenceCodes:
    """Codes of the repository's reference files, for tests that have no database."""
    values = {}
    for field, (_, filename) in _CODE_SOURCES.items():
        with open(reference_dir / filename, newline="", encoding="utf-8") as f:
            values[field] = frozenset(row["code"] for row in csv.DictReader(f))
    return ReferenceCodes(**values)


# One entry per file, in dependency order: (file, temp table columns, upsert SQL).
# `src` is the temporary table holding the file; every column arrives as text.
_LOADS: list[tuple[str, list[str], str]] = [
    (
        "action_directions.csv",
        ["code", "libelle", "order"],
        """
        INSERT INTO qfdmo_actiondirection (code, libelle, "order")
        SELECT code, coalesce(libelle, ''), "order"::int FROM src
        ON CONFLICT (code) DO UPDATE SET libelle = excluded.libelle, "order" = excluded."order"
        WHERE (qfdmo_actiondirection.libelle, qfdmo_actiondirection."order")
            IS DISTINCT FROM (excluded.libelle, excluded."order")
        """,
    ),
    (
        "groupes_action.csv",
        ["code", "afficher", "description", "order", "couleur", "couleur_claire", "icon", "fill"],
        """
        INSERT INTO qfdmo_groupeaction
            (code, afficher, description, "order", couleur, couleur_claire, icon, fill)
        SELECT code, afficher::boolean, description, "order"::int, couleur, couleur_claire, icon,
               fill::boolean
        FROM src
        ON CONFLICT (code) DO UPDATE SET
            afficher = excluded.afficher, description = excluded.description,
            "order" = excluded."order", couleur = excluded.couleur,
            couleur_claire = excluded.couleur_claire, icon = excluded.icon, fill = excluded.fill
        WHERE (qfdmo_groupeaction.afficher, qfdmo_groupeaction.description,
               qfdmo_groupeaction."order", qfdmo_groupeaction.couleur,
               qfdmo_groupeaction.couleur_claire, qfdmo_groupeaction.icon, qfdmo_groupeaction.fill)
            IS DISTINCT FROM (excluded.afficher, excluded.description, excluded."order",
                              excluded.couleur, excluded.couleur_claire, excluded.icon, excluded.fill)
        """,
    ),
    (
        "actions.csv",
        [
            "code",
            "libelle",
            "libelle_groupe",
            "afficher",
            "description",
            "order",
            "couleur",
            "icon",
            "groupe_action_code",
        ],
        """
        INSERT INTO qfdmo_action (code, libelle, libelle_groupe, afficher, description,
                                  "order", couleur, icon, groupe_action_id)
        SELECT src.code, coalesce(src.libelle, ''), coalesce(src.libelle_groupe, ''),
               src.afficher::boolean, src.description, src."order"::int,
               src.couleur, src.icon, g.id
        FROM src LEFT JOIN qfdmo_groupeaction g ON g.code = src.groupe_action_code
        ON CONFLICT (code) DO UPDATE SET
            libelle = excluded.libelle, libelle_groupe = excluded.libelle_groupe,
            afficher = excluded.afficher, description = excluded.description,
            "order" = excluded."order", couleur = excluded.couleur, icon = excluded.icon,
            groupe_action_id = excluded.groupe_action_id
        WHERE (qfdmo_action.libelle, qfdmo_action.libelle_groupe, qfdmo_action.afficher,
               qfdmo_action.description, qfdmo_action."order", qfdmo_action.couleur,
               qfdmo_action.icon, qfdmo_action.groupe_action_id)
            IS DISTINCT FROM (excluded.libelle, excluded.libelle_groupe, excluded.afficher,
                              excluded.description, excluded."order", excluded.couleur,
                              excluded.icon, excluded.groupe_action_id)
        """,
    ),
    (
        "actions_directions.csv",
        ["action_code", "direction_code"],
        """
        INSERT INTO qfdmo_action_directions (action_id, actiondirection_id)
        SELECT a.id, d.id FROM src
        JOIN qfdmo_action a ON a.code = src.action_code
        JOIN qfdmo_actiondirection d ON d.code = src.direction_code
        ON CONFLICT (action_id, actiondirection_id) DO NOTHING
        """,
    ),
    (
        "acteur_types.csv",
        ["code", "libelle"],
        """
        INSERT INTO qfdmo_acteurtype (code, libelle)
        SELECT code, coalesce(libelle, '') FROM src
        ON CONFLICT (code) DO UPDATE SET libelle = excluded.libelle
        WHERE qfdmo_acteurtype.libelle IS DISTINCT FROM excluded.libelle
        """,
    ),
    (
        "acteur_services.csv",
        ["code", "libelle"],
        """
        INSERT INTO qfdmo_acteurservice (code, libelle)
        SELECT code, libelle FROM src
        ON CONFLICT (code) DO UPDATE SET libelle = excluded.libelle
        WHERE qfdmo_acteurservice.libelle IS DISTINCT FROM excluded.libelle
        """,
    ),
    (
        "acteur_services_actions.csv",
        ["acteur_service_code", "action_code"],
        """
        INSERT INTO qfdmo_acteurservice_actions (acteurservice_id, action_id)
        SELECT s.id, a.id FROM src
        JOIN qfdmo_acteurservice s ON s.code = src.acteur_service_code
        JOIN qfdmo_action a ON a.code = src.action_code
        ON CONFLICT (acteurservice_id, action_id) DO NOTHING
        """,
    ),
    (
        "labels.csv",
        [
            "code",
            "libelle",
            "afficher",
            "bonus",
            "type_enseigne",
            "url",
            "order",
            "filtre",
            "filtre_label",
            "filtre_texte_d_aide",
            "logo_filtre",
            "logo_file",
        ],
        """
        INSERT INTO qfdmo_labelqualite (code, libelle, afficher, bonus, type_enseigne, url, "order",
                                        filtre, filtre_label, filtre_texte_d_aide, logo_filtre, logo_file)
        SELECT code, coalesce(libelle, ''), afficher::boolean, bonus::boolean,
               type_enseigne::boolean, url, "order"::int, filtre::boolean,
               coalesce(filtre_label, ''), coalesce(filtre_texte_d_aide, ''), logo_filtre, logo_file
        FROM src
        ON CONFLICT (code) DO UPDATE SET
            libelle = excluded.libelle, afficher = excluded.afficher, bonus = excluded.bonus,
            type_enseigne = excluded.type_enseigne, url = excluded.url, "order" = excluded."order",
            filtre = excluded.filtre, filtre_label = excluded.filtre_label,
            filtre_texte_d_aide = excluded.filtre_texte_d_aide, logo_filtre = excluded.logo_filtre,
            logo_file = excluded.logo_file
        WHERE (qfdmo_labelqualite.libelle, qfdmo_labelqualite.afficher, qfdmo_labelqualite.bonus,
               qfdmo_labelqualite.type_enseigne, qfdmo_labelqualite.url,
               qfdmo_labelqualite."order", qfdmo_labelqualite.filtre, qfdmo_labelqualite.filtre_label,
               qfdmo_labelqualite.filtre_texte_d_aide, qfdmo_labelqualite.logo_filtre,
               qfdmo_labelqualite.logo_file)
            IS DISTINCT FROM (excluded.libelle, excluded.afficher, excluded.bonus,
                              excluded.type_enseigne, excluded.url, excluded."order", excluded.filtre,
                              excluded.filtre_label, excluded.filtre_texte_d_aide,
                              excluded.logo_filtre, excluded.logo_file)
        """,
    ),
    (
        "sources.csv",
        ["code", "libelle", "afficher", "url", "logo_file", "licence"],
        """
        INSERT INTO qfdmo_source (code, libelle, afficher, url, logo_file, licence)
        SELECT code, coalesce(libelle, ''), afficher::boolean, url, logo_file, licence
        FROM src
        ON CONFLICT (code) DO UPDATE SET
            libelle = excluded.libelle, afficher = excluded.afficher, url = excluded.url,
            logo_file = excluded.logo_file, licence = excluded.licence
        WHERE (qfdmo_source.libelle, qfdmo_source.afficher, qfdmo_source.url,
               qfdmo_source.logo_file, qfdmo_source.licence)
            IS DISTINCT FROM (excluded.libelle, excluded.afficher, excluded.url,
                              excluded.logo_file, excluded.licence)
        """,
    ),
    (
        "categories.csv",
        ["code", "libelle"],
        """
        INSERT INTO qfdmo_categorieobjet (code, libelle)
        SELECT code, coalesce(libelle, '') FROM src
        ON CONFLICT (code) DO UPDATE SET libelle = excluded.libelle
        WHERE qfdmo_categorieobjet.libelle IS DISTINCT FROM excluded.libelle
        """,
    ),
    (
        "sous_categories.csv",
        ["code", "libelle", "categorie_code", "afficher", "afficher_carte", "reemploi_possible"],
        """
        INSERT INTO qfdmo_souscategorieobjet
            (code, libelle, categorie_id, afficher, afficher_carte, reemploi_possible)
        SELECT src.code, coalesce(src.libelle, ''), c.id, src.afficher::boolean,
               src.afficher_carte::boolean, src.reemploi_possible::boolean
        FROM src JOIN qfdmo_categorieobjet c ON c.code = src.categorie_code
        ON CONFLICT (code) DO UPDATE SET
            libelle = excluded.libelle, categorie_id = excluded.categorie_id,
            afficher = excluded.afficher, afficher_carte = excluded.afficher_carte,
            reemploi_possible = excluded.reemploi_possible
        WHERE (qfdmo_souscategorieobjet.libelle, qfdmo_souscategorieobjet.categorie_id,
               qfdmo_souscategorieobjet.afficher, qfdmo_souscategorieobjet.afficher_carte,
               qfdmo_souscategorieobjet.reemploi_possible)
            IS DISTINCT FROM (excluded.libelle, excluded.categorie_id, excluded.afficher,
                              excluded.afficher_carte, excluded.reemploi_possible)
        """,
    ),
]


def load_reference_data(conn: psycopg.Connection, reference_dir: Path = REFERENCE_DIR) -> int:
    """Upsert every reference file in one transaction; returns the number of rows written."""
    written = 0
    with conn.transaction(), conn.cursor() as cur:
        for filename, columns, upsert in _LOADS:
            column_list = ", ".join(f'"{c}"' for c in columns)
            column_defs = ", ".join(f'"{c}" text' for c in columns)
            cur.execute("DROP TABLE IF EXISTS src")
            cur.execute(f"CREATE TEMPORARY TABLE src ({column_defs})")
            _check_header(reference_dir / filename, columns)
            with open(reference_dir / filename, "rb") as f:
                with cur.copy(f"COPY src ({column_list}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                    copy.write(f.read())
            _check_codes_resolved(cur, filename, columns)
            cur.execute(upsert)
            written += max(cur.rowcount, 0)
            cur.execute("DROP TABLE src")
    return written


def _check_header(path: Path, columns: list[str]) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if header != columns:
        raise ValueError(f"{path.name}: header {header} != expected {columns}")


# Foreign codes in reference files -> the table that must hold them.
_FOREIGN_CODES = {
    "groupe_action_code": "qfdmo_groupeaction",
    "action_code": "qfdmo_action",
    "direction_code": "qfdmo_actiondirection",
    "acteur_service_code": "qfdmo_acteurservice",
    "categorie_code": "qfdmo_categorieobjet",
}


def _check_codes_resolved(cur: psycopg.Cursor, filename: str, columns: list[str]) -> None:
    """A typo in a reference file must fail loudly rather than drop a link silently."""
    for column, table in _FOREIGN_CODES.items():
        if column not in columns:
            continue
        cur.execute(
            f"SELECT DISTINCT src.{column} FROM src LEFT JOIN {table} t ON t.code = src.{column}"
            f" WHERE src.{column} IS NOT NULL AND t.id IS NULL"
        )
        missing = [code for (code,) in cur.fetchall()]
        if missing:
            raise ValueError(f"{filename}: unknown {column} {sorted(missing)}")
