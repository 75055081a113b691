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
    reference_codes_from_files,
)
from qfdmo.carte_db.contract import load_contract

# The function, not the submodule of the same name (which another import may have bound on the package).
from qfdmo.carte_db.migrate import MIGRATIONS_DIR, migrate, migration_files, pending_series
from qfdmo.carte_db.reference import REFERENCE_DIR

REPO = Path(__file__).resolve().parent.parent

# Every table of the contract, reference tables first (the reference data fills those).
TABLES = list(load_contract())
REFERENCE_TABLES = [
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
    assert applied == [name for name, _ in pending_series()]
    assert any(name.startswith("platform/") for name in applied)
    with psycopg.connect(empty_db) as conn:
        before = schema_snapshot(conn)
    assert migrate(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        assert schema_snapshot(conn) == before
        recorded = [n for (n,) in conn.execute("SELECT name FROM qfdmo_platform.schema_migrations ORDER BY name")]
        assert recorded == sorted(applied)
        # The platform's bookkeeping is not in the webapp's schema.
        assert conn.execute("SELECT to_regclass('public.carte_schema_migrations')").fetchone()[0] is None
        present = {n for (n,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert set(TABLES) <= present
        assert conn.execute("SELECT extname FROM pg_extension WHERE extname = 'postgis'").fetchone()


def test_cli_migrate_reads_dsn_from_environment(empty_db):
    env = {**os.environ, "PYTHONPATH": str(REPO / "dags"), "CARTE_DB_DSN": empty_db}
    first = subprocess.run(
        [sys.executable, "-m", "qfdmo.carte_db", "migrate"], env=env, capture_output=True, text=True, check=True
    )
    assert f"{len(pending_series())} migration(s) applied" in first.stdout
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
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in REFERENCE_TABLES}
        assert load_reference_data(conn) == 0  # already loaded by migrate(): nothing rewritten
        assert {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in REFERENCE_TABLES} == counts
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
        conn.execute(
            "INSERT INTO qfdmo_source (code, libelle, afficher) VALUES ('webapp_only', 'ajoutée par la webapp', true)"
        )
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
        insert = (
            "INSERT INTO qfdmo_acteur (identifiant_unique, identifiant_externe, nom, public_accueilli, reprise,"
            " source_id, acteur_type_id, statut) VALUES (%s, '1', 'Point', '', '', %s, %s, %s)"
        )
        conn.execute(insert, ("refashion_1", source_id, type_id, "ACTIF"))
        row = conn.execute(
            "SELECT statut, adresse, siren, lieu_prestation, location, cree_le IS NOT NULL,"
            " modifie_le IS NOT NULL, siret_is_closed FROM qfdmo_acteur"
        ).fetchone()
        assert row == ("ACTIF", "", "", None, None, True, True, None)
        # One ACTIF acteur per (source, identifiant_externe); SUPPRIME ones do not count.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("refashion_1bis", source_id, type_id, "ACTIF"))
        conn.execute(insert, ("refashion_1old", source_id, type_id, "SUPPRIME"))
        # As in the webapp: nom, public_accueilli, reprise and the acteur type have no default.
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute(
                "INSERT INTO qfdmo_acteur (identifiant_unique, source_id, acteur_type_id) VALUES ('x', %s, %s)",
                (source_id, type_id),
            )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO qfdmo_source (code, libelle, afficher) VALUES ('Bad Code', 'x', true)")
        location_type = conn.execute(
            "SELECT type, srid FROM geography_columns WHERE f_table_name = 'qfdmo_acteur'"
        ).fetchone()
        assert location_type == ("Point", 4326)


def _insert_acteur(conn: psycopg.Connection, identifiant: str, lon: float, lat: float) -> None:
    conn.execute(
        "INSERT INTO qfdmo_acteur (identifiant_unique, identifiant_externe, nom, public_accueilli, reprise,"
        " source_id, acteur_type_id, location)"
        " SELECT %(id)s, %(id)s, %(id)s, '', '', s.id, t.id, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)"
        " FROM qfdmo_source s, qfdmo_acteurtype t WHERE s.code = 'refashion' AND t.code = 'commerce'",
        {"id": identifiant, "lon": lon, "lat": lat},
    )


def test_radius_search_is_in_metres(carte_dsn):
    """The carte's "within N km" filter: ST_DWithin on geography takes metres (on geometry it read
    10,000 as degrees and found Lyon within 10 km of Paris)."""
    with psycopg.connect(carte_dsn, autocommit=True) as conn:
        _insert_acteur(conn, "notre_dame", 2.3499, 48.8530)  # ~0.5 km from the point
        _insert_acteur(conn, "vincennes", 2.4397, 48.8448)  # ~6.5 km
        _insert_acteur(conn, "versailles", 2.1204, 48.8049)  # ~17 km
        _insert_acteur(conn, "lyon", 4.8357, 45.7640)  # ~390 km
        found = conn.execute(
            "SELECT identifiant_unique, round(ST_Distance(location, ST_MakePoint(2.3522, 48.8566)::geography))"
            " FROM qfdmo_acteur WHERE ST_DWithin(location, ST_MakePoint(2.3522, 48.8566)::geography, 10000)"
            " ORDER BY 2"
        ).fetchall()
    assert [name for name, _ in found] == ["notre_dame", "vincennes"]
    assert all(metres < 10_000 for _, metres in found)


def test_platform_only_creates_nothing_in_the_webapp_schema(empty_db):
    """Preprod and prod: the webapp's migrations own the qfdmo_ tables; the platform adds its schema."""
    applied = migrate(empty_db, platform_only=True)
    assert applied and all(name.startswith("platform/") for name in applied)
    with psycopg.connect(empty_db) as conn:
        public = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert public == 0
        assert conn.execute("SELECT to_regclass('qfdmo_platform.applied_feed')").fetchone()[0]
    # The same database migrated later with the webapp's tables (local use) gets the rest only.
    assert [n for n in migrate(empty_db) if n.startswith("platform/")] == []


def test_a_database_of_the_former_schema_is_migrated_in_place(empty_db):
    """A local database created by 0001-0003 (geometry, serial ids, bookkeeping and fast-path records
    in the webapp's schema) reaches the contract with its data kept."""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        for path in migration_files(MIGRATIONS_DIR)[:3]:
            conn.execute(path.read_text(encoding="utf-8"))
        conn.execute("CREATE TABLE carte_schema_migrations (name text PRIMARY KEY, applied_at timestamptz"
                     " NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO carte_schema_migrations (name) SELECT unnest(%s::text[])",
                     ([p.name for p in migration_files(MIGRATIONS_DIR)[:3]],))
        conn.execute("CREATE SCHEMA qfdmo_pipeline")
        conn.execute("CREATE TABLE qfdmo_pipeline.applied_feed (source text PRIMARY KEY, fingerprint text NOT NULL,"
                     " witness text NOT NULL, summary text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO qfdmo_pipeline.applied_feed VALUES ('eo-refashion', 'f', 'w', '{}', now())")
        # The reference rows the acteur needs, as the former loader wrote them.
        conn.execute("INSERT INTO qfdmo_source (code) VALUES ('refashion')")
        conn.execute("INSERT INTO qfdmo_acteurtype (code) VALUES ('commerce')")
        conn.execute("INSERT INTO qfdmo_action (code, libelle) VALUES ('donner', 'donner'), ('preter', 'prêter')")
        _insert_acteur(conn, "paris", 2.3522, 48.8566)
        conn.execute("UPDATE qfdmo_acteur SET lieu_prestation = ''")
        conn.execute("INSERT INTO qfdmo_propositionservice (acteur_id, action_id)"
                     " SELECT 'paris', id FROM qfdmo_action WHERE code = 'donner'")

    applied = migrate(empty_db)
    assert applied == [name for name, _ in pending_series()][3:]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        assert conn.execute(
            "SELECT round(ST_X(location::geometry)::numeric, 4)::float8,"
            " round(ST_Y(location::geometry)::numeric, 4)::float8,"
            " lieu_prestation FROM qfdmo_acteur"
        ).fetchone() == (2.3522, 48.8566, None)
        # The identity numbers on after the ids the serial had given.
        conn.execute("INSERT INTO qfdmo_propositionservice (acteur_id, action_id)"
                     " SELECT 'paris', id FROM qfdmo_action WHERE code = 'preter'")
        ids = [i for (i,) in conn.execute("SELECT id FROM qfdmo_propositionservice ORDER BY id")]
        assert len(ids) == 2 and ids[1] > ids[0]
        assert conn.execute("SELECT source FROM qfdmo_platform.applied_feed").fetchall() == [("eo-refashion",)]
        assert conn.execute("SELECT to_regnamespace('qfdmo_pipeline')").fetchone()[0] is None
        recorded = {n for (n,) in conn.execute("SELECT name FROM qfdmo_platform.schema_migrations")}
        assert recorded == {name for name, _ in pending_series()}
    assert migrate(empty_db) == []
