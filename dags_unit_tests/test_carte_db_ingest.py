"""carte_db stage / diff / apply against a real PostgreSQL + PostGIS carte database."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from qfdmo.carte_db import StagingError, apply, diff, drop_staging, stage
from qfdmo.carte_db.applying import WRITTEN_TABLES
from qfdmo.carte_db.run_files import Links, RunFileWriter
from qfdmo.carte_db.run_tables import lock_key
from qfdmo.carte_db.staging_format import (
    ACTEUR_COLUMNS,
    LABELS_FILE,
    PROPOSITIONS_FILE,
)

SOURCES = ["refashion"]
ALL_TABLES = (
    *WRITTEN_TABLES,
    "qfdmo_revisionacteur",
    "qfdmo_revisionpropositionservice",
    "qfdmo_revisionpropositionservice_sous_categories",
    "qfdmo_revisionacteur_labels",
)


def acteur(n: int, **changes: Any) -> dict[str, Any]:
    """One normalised refashion acteur; `ps` maps action code -> sous-catégorie codes."""
    row: dict[str, Any] = {c: "" for c in ACTEUR_COLUMNS}
    row.update(
        identifiant_unique=f"refashion_PAV-{n}",
        identifiant_externe=f"PAV-{n}",
        source_code="refashion",
        acteur_type_code="pav_public",
        nom=f"Point {n}",
        adresse=f"{n} rue de la Paix",
        code_postal="75002",
        ville="Paris",
        public_accueilli="Particuliers",
        exclusivite_de_reprisereparation=None,
        uniquement_sur_rdv=False,
        lieu_prestation="SUR_PLACE",
        latitude=48.86 + n / 1000,
        longitude=2.33 + n / 1000,
        ps={"trier": ["vetement", "linge_de_maison"]},
        labels=[],
        services=["structure_de_collecte"],
    )
    row.update(changes)
    return row


def write_run(run_dir: Path, acteurs: list[dict[str, Any]]) -> Path:
    with RunFileWriter(run_dir) as out:
        for number, row in enumerate(acteurs, start=1):
            propositions = [(action, code) for action, codes in row["ps"].items() for code in codes]
            out.write_values([number if c == "row_number" else row[c] for c in ACTEUR_COLUMNS],
                             Links(propositions, row["labels"], row["services"]))
    return run_dir


def versions(conn: psycopg.Connection) -> dict[str, set[tuple]]:
    """Physical row versions (ctid, xmin) of every table: unchanged means not written at all."""
    return {t: set(conn.execute(f"SELECT ctid::text, xmin::text FROM {t}").fetchall()) for t in ALL_TABLES}


def contents(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {t: sorted(conn.execute(f"SELECT t::text FROM {t} t").fetchall()) for t in ALL_TABLES}


def sets_of(conn: psycopg.Connection, identifiant: str) -> dict[str, Any]:
    ps = conn.execute(
        "SELECT a.code, array_agg(sc.code ORDER BY sc.code) FROM qfdmo_propositionservice ps"
        " JOIN qfdmo_action a ON a.id = ps.action_id"
        " LEFT JOIN qfdmo_propositionservice_sous_categories x ON x.propositionservice_id = ps.id"
        " LEFT JOIN qfdmo_souscategorieobjet sc ON sc.id = x.souscategorieobjet_id"
        " WHERE ps.acteur_id = %s GROUP BY a.code",
        (identifiant,),
    ).fetchall()
    labels = conn.execute(
        "SELECT l.code FROM qfdmo_acteur_labels x JOIN qfdmo_labelqualite l ON l.id = x.labelqualite_id"
        " WHERE x.acteur_id = %s ORDER BY 1",
        (identifiant,),
    ).fetchall()
    services = conn.execute(
        "SELECT s.code FROM qfdmo_acteur_acteur_services x JOIN qfdmo_acteurservice s ON s.id = x.acteurservice_id"
        " WHERE x.acteur_id = %s ORDER BY 1",
        (identifiant,),
    ).fetchall()
    return {"ps": dict(ps), "labels": [c for (c,) in labels], "services": [c for (c,) in services]}


def run(conn: psycopg.Connection, run_dir: Path, key: str = "t", sources: list[str] = SOURCES):
    staged = stage(conn, key, run_dir, sources)
    applied = apply(conn, key, sources)
    drop_staging(conn, key)
    return staged, applied


@pytest.fixture
def conn(carte_dsn):
    with psycopg.connect(carte_dsn, autocommit=True) as connection:
        yield connection


def test_first_load_writes_acteurs_and_their_sets(conn, tmp_path):
    feed = [
        acteur(
            1,
            labels=["refashion"],
            services=["service_de_reparation", "structure_de_collecte"],
            ps={"trier": ["vetement"], "reparer": ["chaussures", "vetement"]},
        ),
        acteur(
            2,
            acteur_type_code="acteur_digital",
            identifiant_unique="refashion_PAV-2_d",
            identifiant_externe="PAV-2_d",
            latitude=None,
            longitude=None,
            nom="Site\tweb \\ appli",
        ),
        acteur(3),
    ]
    staged, applied = run(conn, write_run(tmp_path / "r1", feed))
    assert staged.acteurs == 3 and staged.duplicates_merged == 0
    assert (staged.diff.new, staged.diff.changed, staged.diff.unchanged, staged.diff.to_deactivate) == (3, 0, 0, 0)
    assert applied.diff.new == 3
    assert applied.rows_written == {
        "qfdmo_acteur": 3,
        "qfdmo_propositionservice": 4,
        "qfdmo_propositionservice_sous_categories": 7,
        "qfdmo_acteur_labels": 1,
        "qfdmo_acteur_acteur_services": 4,
    }
    row = conn.execute(
        "SELECT a.nom, a.statut, s.code, t.code,"
        " ST_X(a.location::geometry), ST_Y(a.location::geometry), ST_SRID(a.location),"
        " a.uniquement_sur_rdv, a.exclusivite_de_reprisereparation, a.cree_le = a.modifie_le"
        " FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
        " JOIN qfdmo_acteurtype t ON t.id = a.acteur_type_id WHERE identifiant_unique = 'refashion_PAV-1'"
    ).fetchone()
    assert row == ("Point 1", "ACTIF", "refashion", "pav_public", 2.331, 48.861, 4326, False, None, True)
    assert sets_of(conn, "refashion_PAV-1") == {
        "ps": {"trier": ["vetement"], "reparer": ["chaussures", "vetement"]},
        "labels": ["refashion"],
        "services": ["service_de_reparation", "structure_de_collecte"],
    }
    digital = conn.execute(
        "SELECT nom, location IS NULL FROM qfdmo_acteur WHERE identifiant_unique = 'refashion_PAV-2_d'"
    ).fetchone()
    assert digital == ("Site\tweb \\ appli", True)
    assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'").fetchone()[0] == 0


def test_unchanged_rerun_writes_nothing(conn, tmp_path):
    feed = [acteur(n, labels=["refashion"] if n % 2 else []) for n in range(1, 30)]
    feed.append(acteur(30, latitude=None, longitude=None, acteur_type_code="acteur_digital"))
    run(conn, write_run(tmp_path / "r1", feed))
    before = versions(conn)
    modifie_le = conn.execute("SELECT max(modifie_le) FROM qfdmo_acteur").fetchone()
    staged, applied = run(conn, write_run(tmp_path / "r2", feed), key="t2")
    assert (staged.diff.unchanged, staged.diff.new, staged.diff.changed, staged.diff.to_deactivate) == (30, 0, 0, 0)
    assert staged.diff.active_before == 30
    assert applied.total_rows_written == 0
    assert versions(conn) == before
    assert conn.execute("SELECT max(modifie_le) FROM qfdmo_acteur").fetchone() == modifie_le


def test_changed_acteurs_are_updated_and_their_sets_replaced(conn, tmp_path):
    feed = [acteur(n) for n in range(1, 6)]
    run(conn, write_run(tmp_path / "r1", feed))
    conn.execute(
        "UPDATE qfdmo_acteur SET naf_principal = '95.29Z', commentaires = 'vu'"
        " WHERE identifiant_unique = 'refashion_PAV-1'"
    )
    before = dict(conn.execute("SELECT identifiant_unique, (cree_le, modifie_le)::text FROM qfdmo_acteur"))
    untouched = {v for v in versions(conn)["qfdmo_acteur"]}
    feed[0] = acteur(1, nom="Nouveau nom")  # scalar column
    feed[1] = acteur(2, ps={"trier": ["vetement", "chaussures"]})  # sous-catégories only
    feed[2] = acteur(3, latitude=48.9)  # location only
    feed[3] = acteur(4, labels=["refashion"])  # label added
    staged, applied = run(conn, write_run(tmp_path / "r2", feed), key="t2")
    assert (staged.diff.changed, staged.diff.unchanged) == (4, 1)
    assert sorted(staged.diff.examples["changed"]) == [f"refashion_PAV-{n}" for n in range(1, 5)]
    assert staged.diff.changed_columns == {"nom": 1, "location": 1, "sets_only": 2}
    assert applied.rows_written["qfdmo_acteur"] == 4
    assert applied.rows_written["qfdmo_propositionservice"] == 8  # 4 deleted + 4 inserted
    rows = dict(conn.execute("SELECT identifiant_unique, (nom, naf_principal, commentaires)::text FROM qfdmo_acteur"))
    assert rows["refashion_PAV-1"] == '("Nouveau nom",95.29Z,vu)'  # columns the feed does not own are kept
    for n in range(1, 5):
        cree_le, modifie_le = conn.execute(
            "SELECT cree_le::text, modifie_le FROM qfdmo_acteur WHERE identifiant_unique = %s", (f"refashion_PAV-{n}",)
        ).fetchone()
        assert f"({cree_le}," in before[f"refashion_PAV-{n}"].replace('"', "")
        assert str(modifie_le) not in before[f"refashion_PAV-{n}"]
    assert sets_of(conn, "refashion_PAV-2")["ps"] == {"trier": ["chaussures", "vetement"]}
    assert sets_of(conn, "refashion_PAV-4")["labels"] == ["refashion"]
    assert conn.execute(
        "SELECT ST_Y(location::geometry) FROM qfdmo_acteur WHERE identifiant_unique = 'refashion_PAV-3'"
    ).fetchone() == (48.9,)
    # The unchanged acteur's row was not rewritten.
    unchanged_version = conn.execute(
        "SELECT ctid::text, xmin::text FROM qfdmo_acteur WHERE identifiant_unique = 'refashion_PAV-5'"
    ).fetchone()
    assert unchanged_version in untouched


def test_acteurs_absent_from_the_feed_are_deactivated_then_reactivated(conn, tmp_path):
    feed = [acteur(n) for n in range(1, 5)]
    # An acteur of another source must not be touched by a refashion run.
    other = acteur(9, source_code="aliapur", identifiant_unique="aliapur_9", identifiant_externe="9")
    run(conn, write_run(tmp_path / "other", [other]), key="o", sources=["aliapur"])
    run(conn, write_run(tmp_path / "r1", feed))
    staged, applied = run(conn, write_run(tmp_path / "r2", feed[:3]), key="t2")
    assert (staged.diff.to_deactivate, staged.diff.active_before) == (1, 4)
    assert staged.diff.deactivation_share == 0.25
    assert staged.diff.examples["to_deactivate"] == ["refashion_PAV-4"]
    assert applied.rows_written == {t: (1 if t == "qfdmo_acteur" else 0) for t in WRITTEN_TABLES}
    statuts = dict(conn.execute("SELECT identifiant_unique, statut FROM qfdmo_acteur"))
    assert statuts == {
        "aliapur_9": "ACTIF",
        "refashion_PAV-1": "ACTIF",
        "refashion_PAV-2": "ACTIF",
        "refashion_PAV-3": "ACTIF",
        "refashion_PAV-4": "SUPPRIME",
    }
    assert sets_of(conn, "refashion_PAV-4")["ps"] == {"trier": ["linge_de_maison", "vetement"]}  # kept

    # Already SUPPRIME: not counted, not rewritten.
    before = versions(conn)
    staged, applied = run(conn, write_run(tmp_path / "r3", feed[:3]), key="t3")
    assert (staged.diff.to_deactivate, applied.total_rows_written) == (0, 0)
    assert versions(conn) == before

    # Back in the feed: reactivated, counted as changed.
    staged, applied = run(conn, write_run(tmp_path / "r4", feed), key="t4")
    assert (staged.diff.changed, staged.diff.unchanged, staged.diff.new) == (1, 3, 0)
    assert staged.diff.changed_columns == {"reactivated": 1}
    assert conn.execute("SELECT statut FROM qfdmo_acteur WHERE identifiant_unique = 'refashion_PAV-4'").fetchone() == (
        "ACTIF",
    )


def test_a_feed_whose_identifiants_all_changed_is_all_new_and_deactivates_the_old_ones(conn, tmp_path):
    # No staged acteur is in the carte: the diff takes its first-load path, deactivations included.
    run(conn, write_run(tmp_path / "r1", [acteur(n) for n in range(1, 4)]))
    renamed = [acteur(n, identifiant_unique=f"refashion_NEW-{n}", identifiant_externe=f"NEW-{n}") for n in (1, 2)]
    staged, applied = run(conn, write_run(tmp_path / "r2", renamed), key="t2")
    assert (staged.diff.new, staged.diff.changed, staged.diff.unchanged) == (2, 0, 0)
    assert (staged.diff.to_deactivate, staged.diff.active_before) == (3, 3)
    assert {kind: sorted(examples) for kind, examples in staged.diff.examples.items()} == {
        "new": ["refashion_NEW-1", "refashion_NEW-2"],
        "to_deactivate": ["refashion_PAV-1", "refashion_PAV-2", "refashion_PAV-3"],
    }
    assert applied.diff == staged.diff
    assert applied.rows_written["qfdmo_acteur"] == 5
    statuts = dict(conn.execute("SELECT identifiant_unique, statut FROM qfdmo_acteur"))
    assert statuts == {"refashion_PAV-1": "SUPPRIME", "refashion_PAV-2": "SUPPRIME", "refashion_PAV-3": "SUPPRIME",
                       "refashion_NEW-1": "ACTIF", "refashion_NEW-2": "ACTIF"}
    assert sets_of(conn, "refashion_NEW-2") == sets_of(conn, "refashion_PAV-2")


def test_duplicate_rows_are_merged(conn, tmp_path):
    feed = [
        acteur(1, nom="Premier", labels=["refashion"], ps={"trier": ["vetement"]}),
        acteur(2),
        acteur(
            1,
            nom="Second",
            labels=["ess"],
            services=["service_de_reparation"],
            ps={"trier": ["chaussures", "vetement"], "reparer": ["vetement"]},
        ),
    ]
    staged, _ = run(conn, write_run(tmp_path / "r1", feed))
    assert (staged.acteurs, staged.duplicates_merged, staged.diff.new) == (2, 1, 2)
    assert conn.execute("SELECT nom FROM qfdmo_acteur WHERE identifiant_unique = 'refashion_PAV-1'").fetchone() == (
        "Premier",
    )
    assert sets_of(conn, "refashion_PAV-1") == {
        "ps": {"trier": ["chaussures", "vetement"], "reparer": ["vetement"]},
        "labels": ["ess", "refashion"],
        "services": ["service_de_reparation", "structure_de_collecte"],
    }
    # The same duplicated feed again is unchanged.
    staged, applied = run(conn, write_run(tmp_path / "r2", feed), key="t2")
    assert (staged.diff.unchanged, applied.total_rows_written) == (2, 0)


def test_revisions_are_never_written(conn, tmp_path):
    feed = [acteur(n) for n in range(1, 4)]
    run(conn, write_run(tmp_path / "r1", feed))
    conn.execute(
        "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise, source_id,"
        " acteur_type_id)"
        " SELECT identifiant_unique, 'Nom corrigé', '', '', source_id, acteur_type_id FROM qfdmo_acteur"
        " WHERE identifiant_unique IN ('refashion_PAV-1', 'refashion_PAV-3')"
    )
    conn.execute(
        "INSERT INTO qfdmo_revisionpropositionservice (acteur_id, action_id)"
        " SELECT 'refashion_PAV-1', id FROM qfdmo_action WHERE code = 'reparer'"
    )
    revisions = {t: rows for t, rows in versions(conn).items() if "revision" in t}
    feed[0] = acteur(1, nom="Nom de la source")  # changed
    run(conn, write_run(tmp_path / "r2", feed[:2]), key="t2")  # PAV-3 deactivated
    assert {t: rows for t, rows in versions(conn).items() if "revision" in t} == revisions
    assert conn.execute(
        "SELECT nom FROM qfdmo_revisionacteur WHERE identifiant_unique = 'refashion_PAV-1'"
    ).fetchone() == ("Nom corrigé",)


def test_inactive_acteurs_are_left_as_they_are(conn, tmp_path):
    feed = [acteur(1), acteur(2)]
    run(conn, write_run(tmp_path / "r1", feed))
    conn.execute("UPDATE qfdmo_acteur SET statut = 'INACTIF' WHERE identifiant_unique = 'refashion_PAV-1'")
    before = versions(conn)
    staged, applied = run(conn, write_run(tmp_path / "r2", [acteur(1, nom="Autre"), acteur(2)]), key="t2")
    assert (staged.diff.inactive, staged.diff.unchanged, applied.total_rows_written) == (1, 1, 0)
    assert versions(conn) == before
    staged, applied = run(conn, write_run(tmp_path / "r3", [acteur(2)]), key="t3")
    assert (staged.diff.to_deactivate, applied.total_rows_written) == (0, 0)  # INACTIF is not ACTIF


def test_failure_during_apply_leaves_the_database_as_it_was(conn, tmp_path):
    feed = [acteur(n) for n in range(1, 6)]
    run(conn, write_run(tmp_path / "r1", feed))
    feed[0] = acteur(1, nom="Changé", labels=["refashion"])
    feed.append(acteur(6, labels=["ess"]))
    stage(conn, "t2", write_run(tmp_path / "r2", feed[1:]), SOURCES)  # also deactivates PAV-1
    before, before_versions = contents(conn), versions(conn)
    # Labels are written last: acteurs, propositions and services are already written when it fails.
    ess = conn.execute("SELECT id FROM qfdmo_labelqualite WHERE code = 'ess'").fetchone()[0]
    conn.execute(f"ALTER TABLE qfdmo_acteur_labels ADD CONSTRAINT injected_failure CHECK (labelqualite_id <> {ess})")
    with pytest.raises(psycopg.errors.CheckViolation, match="injected_failure"):
        apply(conn, "t2", SOURCES)
    assert contents(conn) == before
    assert versions(conn) == before_versions
    conn.execute("ALTER TABLE qfdmo_acteur_labels DROP CONSTRAINT injected_failure")
    applied = apply(conn, "t2", SOURCES)  # the staged run is still there and applies cleanly
    assert (applied.diff.new, applied.diff.to_deactivate) == (1, 1)


def test_apply_recomputes_the_diff_from_the_current_database(conn, tmp_path):
    run(conn, write_run(tmp_path / "r1", [acteur(1), acteur(2)]))
    staged = stage(conn, "t2", write_run(tmp_path / "r2", [acteur(1), acteur(2, nom="Changé"), acteur(3)]), SOURCES)
    assert (staged.diff.new, staged.diff.changed) == (1, 1)
    # While the run waits for approval, someone else writes the same change.
    conn.execute("UPDATE qfdmo_acteur SET nom = 'Changé' WHERE identifiant_unique = 'refashion_PAV-2'")
    assert diff(conn, "t2", SOURCES).changed == 0
    applied = apply(conn, "t2", SOURCES)
    assert (applied.diff.new, applied.diff.changed, applied.rows_written["qfdmo_acteur"]) == (1, 0, 1)


def test_acteur_new_at_stage_and_written_before_apply_is_compared_with_its_sets(conn, tmp_path):
    # Staged sets are only signed for acteurs already in the database; one that appeared
    # between stage and apply is signed by apply's own diff.
    run(conn, write_run(tmp_path / "r1", [acteur(1)]))
    feed = [acteur(1), acteur(2, ps={"trier": ["vetement", "chaussures"]}, labels=["refashion"])]
    waiting = stage(conn, "waiting", write_run(tmp_path / "r2", feed), SOURCES)
    assert waiting.diff.new == 1
    run(conn, write_run(tmp_path / "r3", feed), key="other")
    applied = apply(conn, "waiting", SOURCES)
    assert (applied.diff.new, applied.diff.changed, applied.diff.unchanged) == (0, 0, 2)
    assert applied.total_rows_written == 0
    drop_staging(conn, "waiting")


@pytest.fixture(params=["one connection", "two connections"])
def second_conn(request, carte_dsn):
    """stage() on one connection, or with the second one it loads and checks the sets on."""
    if request.param == "one connection":
        yield None
    else:
        with psycopg.connect(carte_dsn, autocommit=True) as connection:
            yield connection


def test_unknown_codes_fail_before_anything_is_written(conn, second_conn, tmp_path):
    before = contents(conn)
    feed = [
        acteur(1, ps={"trier": ["vetement", "objet_inconnu"]}),
        acteur(2, acteur_type_code="inconnu"),
        acteur(3, labels=["label_inconnu"]),
        acteur(4, services=["service_inconnu"]),
    ]
    with pytest.raises(StagingError) as error:
        stage(conn, "t", write_run(tmp_path / "r1", feed), SOURCES, second_conn)
    message = str(error.value)
    assert "'objet_inconnu' x1" in message and "'inconnu' x1" in message and "'label_inconnu'" in message
    assert "'service_inconnu' x1" in message
    assert contents(conn) == before
    drop_staging(conn, "t")


def test_sets_without_acteur_line_fail_clearly(conn, second_conn, tmp_path):
    run_dir = write_run(tmp_path / "r1", [acteur(1)])
    with (run_dir / PROPOSITIONS_FILE).open("a", encoding="utf-8") as propositions:
        propositions.write("refashion_PAV-9\ttrier\tvetement\nrefashion_PAV-9\treparer\t\\N\n")
    with (run_dir / LABELS_FILE).open("a", encoding="utf-8") as labels:
        labels.write("refashion_PAV-8\trefashion\n")
    with pytest.raises(StagingError, match="2 propositions, 1 labels of an identifiant_unique without acteur line"):
        stage(conn, "t", run_dir, SOURCES, second_conn)
    drop_staging(conn, "t")


def test_acteurs_of_other_sources_are_rejected(conn, tmp_path):
    feed = [acteur(1), acteur(2, source_code="aliapur", identifiant_unique="aliapur_2")]
    with pytest.raises(StagingError, match="outside the run's sources"):
        stage(conn, "t", write_run(tmp_path / "r1", feed), SOURCES)


def test_two_acteurs_with_the_same_partner_id_fail_clearly(conn, tmp_path):
    feed = [acteur(1), acteur(2, identifiant_externe="PAV-1")]
    with pytest.raises(StagingError, match="refashion/'PAV-1' x2"):
        stage(conn, "t", write_run(tmp_path / "r1", feed), SOURCES)


def test_values_too_long_fail_clearly(conn, tmp_path):
    with pytest.raises(StagingError, match="code_postal > 10"):
        stage(conn, "t", write_run(tmp_path / "r1", [acteur(1, code_postal="75002 PARIS CEDEX")]), SOURCES)


def test_values_outside_the_webapp_choices_fail_clearly(conn, tmp_path):
    """The webapp's database does not check its choices (Django does, in its forms): staging does."""
    feed = [acteur(1, public_accueilli="Tout public"), acteur(2, reprise="2 pour 1")]
    with pytest.raises(StagingError) as error:
        run(conn, write_run(tmp_path / "r1", feed))
    assert "public_accueilli are not among the webapp's choices" in str(error.value)
    assert "'Tout public' x1" in str(error.value) and "'2 pour 1' x1" in str(error.value)
    assert conn.execute("SELECT count(*) FROM qfdmo_acteur").fetchone()[0] == 0


def test_lieu_prestation_not_given_is_null(conn, tmp_path):
    """'' (not given) in the run files is NULL in the webapp's column ('' is not one of its choices)."""
    run(conn, write_run(tmp_path / "r1", [acteur(1, lieu_prestation=""), acteur(2, lieu_prestation="A_DOMICILE")]))
    assert dict(conn.execute("SELECT identifiant_unique, lieu_prestation FROM qfdmo_acteur")) == {
        "refashion_PAV-1": None,
        "refashion_PAV-2": "A_DOMICILE",
    }
    _, again = run(
        conn,
        write_run(tmp_path / "r2", [acteur(1, lieu_prestation=""), acteur(2, lieu_prestation="A_DOMICILE")]),
        key="t2",
    )
    assert again.total_rows_written == 0


def test_two_runs_of_the_same_sources_do_not_interleave(conn, carte_dsn, tmp_path):
    stage(conn, "t", write_run(tmp_path / "r1", [acteur(1)]), SOURCES)
    with psycopg.connect(carte_dsn) as other:
        other.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(SOURCES),))  # a run of refashion is applying
        done = threading.Event()
        worker = threading.Thread(target=lambda: (apply(conn, "t", SOURCES), done.set()))
        worker.start()
        assert not done.wait(1.0)  # waits for the other run
        other.rollback()
    worker.join(10)
    assert done.is_set()
    with psycopg.connect(carte_dsn) as check:
        assert check.execute("SELECT count(*) FROM qfdmo_acteur").fetchone() == (1,)


def test_apply_without_superuser_checks_foreign_keys_row_by_row(conn, carte_dsn, tmp_path, caplog):
    """A role that may not set session_replication_role still applies (regular FK triggers)."""
    role = "carte_writer_test"
    conn.execute(f"DROP ROLE IF EXISTS {role}")
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        dbname = conn.info.dbname
        conn.execute(f'GRANT CREATE ON DATABASE "{dbname}" TO {role}')
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        # The platform's schemas belong to whoever migrated them; the writer works in them.
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA qfdmo_staging, qfdmo_platform TO {role}")
        dsn = psycopg.conninfo.make_conninfo(carte_dsn, user=role)
        with psycopg.connect(dsn, autocommit=True) as writer:
            staged, applied = run(writer, write_run(tmp_path / "r1", [acteur(1), acteur(2, labels=["ess"])]))
            assert applied.rows_written["qfdmo_acteur"] == 2
            staged, applied = run(writer, write_run(tmp_path / "r2", [acteur(1, nom="Changé")]), key="t2")
            assert (applied.diff.changed, applied.diff.to_deactivate) == (1, 1)
        assert "foreign keys checked row by row" in caplog.text
        assert dict(conn.execute("SELECT identifiant_unique, statut FROM qfdmo_acteur")) == {
            "refashion_PAV-1": "ACTIF",
            "refashion_PAV-2": "SUPPRIME",
        }
    finally:
        conn.execute(f"DROP OWNED BY {role} CASCADE")
        conn.execute(f"DROP ROLE {role}")
