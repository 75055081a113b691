"""carte_db schema migrations and reference data, against a real PostgreSQL + PostGIS."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from qfdmo.carte_db import (
    load_reference_codes,
    load_reference_data,
    migrate,
    reference_codes_from_files,
)
from qfdmo.carte_db.migrate import migration_files
from qfdmo.carte_db.reference import REFERENCE_DIR

REPO = Path(__file__).resolve().parent.parent

TABLES = [
    "qfdmo_actiondirection",
    "qfdmo_groupeaction",
    "qfdmo_action",
    "qfdmo_action_directions",
    "qfdmo_acteurtype",
    "qfdmo_acteurservice",
    "qfdmo_acteurservice_actions",
    "qfdmo_labelqualite",
    "qfdmo_source",
    "qfdmo_categorieobjet",
    "qfdmo_souscategorieobjet",
    "qfdmo_acteur",
    "qfdmo_revisionacteur",
    "qfdmo_displayedacteur",
    "qfdmo_displayedacteur_sources",
    "qfdmo_propositionservice",
    "qfdmo_propositionservice_sous_categories",
    "qfdmo_revisionpropositionservice",
    "qfdmo_revisionpropositionservice_sous_categories",
    "qfdmo_displayedpropositionservice",
    "qfdmo_displayedpropositionservice_sous_categories",
    "qfdmo_acteur_labels",
    "qfdmo_acteur_acteur_services",
    "qfdmo_revisionacteur_labels",
    "qfdmo_revisionacteur_acteur_services",
    "qfdmo_displayedacteur_labels",
    "qfdmo_displayedacteur_acteur_services",
]


def schema_snapshot(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public'"
        " ORDER BY table_name, column_name"
    ).fetchall()


def csv_rows(name: str) -> int:
    with open(REFERENCE_DIR / name, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.DictReader(f))


@pytest.fixture
def empty_db(postgres) -> str:
    name = f"carte_empty_{os.getpid()}"
    postgres.drop_database(name)
    postgres.create_database(name)
    yield postgres.dsn(name)
    postgres.drop_database(name)


def test_migrate_applies_every_file_once(empty_db):
    applied = migrate(empty_db)
    assert applied == [p.name for p in migration_files()]
    with psycopg.connect(empty_db) as conn:
        before = schema_snapshot(conn)
    assert migrate(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        assert schema_snapshot(conn) == before
        recorded = [n for (n,) in conn.execute("SELECT name FROM carte_schema_migrations ORDER BY name")]
        assert recorded == applied
        present = {n for (n,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert set(TABLES) <= present
        assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'postgis'").fetchone()


def test_cli_migrate_reads_dsn_from_environment(empty_db):
    env = {**os.environ, "PYTHONPATH": str(REPO / "dags"), "CARTE_DB_DSN": empty_db}
    first = subprocess.run(
        [sys.executable, "-m", "qfdmo.carte_db", "migrate"], env=env, capture_output=True, text=True, check=True
    )
    assert f"{len(migration_files())} migration(s) applied" in first.stdout
    again = subprocess.run(
        [sys.executable, "-m", "qfdmo.carte_db", "migrate", "--dsn", empty_db],
        env={**env, "CARTE_DB_DSN": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "0 migration(s) applied" in again.stdout


def test_reference_data_is_loaded_idempotently(carte_dsn):
    with psycopg.connect(carte_dsn) as conn:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES[:11]}
        assert load_reference_data(conn) == 0  # already loaded by migrate(): nothing rewritten
        assert {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES[:11]} == counts
        assert load_reference_codes(conn) == reference_codes_from_files()
    assert counts["qfdmo_source"] == csv_rows("sources.csv") == 76
    assert counts["qfdmo_acteurtype"] == 11
    assert counts["qfdmo_acteurservice"] == 17
    assert counts["qfdmo_action"] == 11
    assert counts["qfdmo_labelqualite"] == 8
    assert counts["qfdmo_categorieobjet"] == 24
    assert counts["qfdmo_souscategorieobjet"] == 86
    assert counts["qfdmo_action_directions"] == csv_rows("actions_directions.csv")
    assert counts["qfdmo_acteurservice_actions"] == csv_rows("acteur_services_actions.csv")


def test_reference_load_updates_changed_rows_and_deletes_nothing(carte_dsn, tmp_path):
    for path in REFERENCE_DIR.glob("*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    sources = (tmp_path / "sources.csv").read_text(encoding="utf-8").splitlines()
    edited = [line.replace("ALIAPUR,", "ALIAPUR (renommé),", 1) if line.startswith("aliapur,") else line
              for line in sources if not line.startswith("soren,")]
    (tmp_path / "sources.csv").write_text("\n".join(edited) + "\n", encoding="utf-8")
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("INSERT INTO qfdmo_source (code, libelle) VALUES ('webapp_only', 'ajoutée par la webapp')")
        conn.commit()
        assert load_reference_data(conn, tmp_path) == 1
        libelles = dict(conn.execute("SELECT code, libelle FROM qfdmo_source").fetchall())
    assert libelles["aliapur"] == "ALIAPUR (renommé)"
    assert "soren" in libelles and "webapp_only" in libelles


def test_reference_load_rejects_unknown_foreign_code(carte_dsn, tmp_path):
    for path in REFERENCE_DIR.glob("*.csv"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    with open(tmp_path / "acteur_services_actions.csv", "a", encoding="utf-8") as f:
        f.write("service_de_reparation,reparrer\n")
    with psycopg.connect(carte_dsn) as conn, pytest.raises(ValueError, match="reparrer"):
        load_reference_data(conn, tmp_path)


def test_acteur_table_defaults_and_constraints(carte_dsn):
    with psycopg.connect(carte_dsn, autocommit=True) as conn:
        source_id = conn.execute("SELECT id FROM qfdmo_source WHERE code = 'refashion'").fetchone()[0]
        type_id = conn.execute("SELECT id FROM qfdmo_acteurtype WHERE code = 'pav_public'").fetchone()[0]
        conn.execute(
            "INSERT INTO qfdmo_acteur (identifiant_unique, identifiant_externe, nom, source_id, acteur_type_id)"
            " VALUES ('refashion_1', '1', 'Point', %s, %s)",
            (source_id, type_id),
        )
        row = conn.execute(
            "SELECT statut, adresse, siren, lieu_prestation, location, cree_le IS NOT NULL,"
            " modifie_le IS NOT NULL, siret_is_closed FROM qfdmo_acteur"
        ).fetchone()
        assert row == ("ACTIF", "", "", "", None, True, True, None)
        # One ACTIF acteur per (source, identifiant_externe); SUPPRIME ones do not count.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO qfdmo_acteur (identifiant_unique, identifiant_externe, source_id, acteur_type_id)"
                " VALUES ('refashion_1bis', '1', %s, %s)",
                (source_id, type_id),
            )
        conn.execute(
            "INSERT INTO qfdmo_acteur (identifiant_unique, identifiant_externe, source_id, acteur_type_id, statut)"
            " VALUES ('refashion_1old', '1', %s, %s, 'SUPPRIME')",
            (source_id, type_id),
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO qfdmo_source (code) VALUES ('Bad Code')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE qfdmo_acteur SET statut = 'DELETED'")
        location_type = conn.execute(
            "SELECT type, srid FROM geometry_columns WHERE f_table_name = 'qfdmo_acteur'"
        ).fetchone()
        assert location_type == ("POINT", 4326)
