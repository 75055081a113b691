"""The carte computation on a real PostgreSQL + PostGIS: every rule of displayed-acteurs.md, built
by the real dbt project (one `dbt build` for all the rules, one more for the changes) then swapped
into the webapp's tables by qfdmo.carte.swap."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
import shortuuid
from fakes.carte_rows import CarteRows
from qfdmo.carte import DbtBuildError, build, swap
from qfdmo.carte.report import build_statistics
from qfdmo.carte.swap import APPLICATION_NAME, TARGETS, SwapError

CHILDREN_OF_P1 = ("c1", "c2", "c3_inactif", "c6_non_libre")


def _scenario(rows: CarteRows) -> None:
    # Rule 1, overlay: text, __empty__, non-text, cree_le.
    rows.acteur("overlay", nom="Nom de la source", adresse="3 rue Source", telephone="01 02 03 04 05",
                cree_le="2020-01-02T00:00:00Z", type="commerce", siret="12345678900011")
    rows.revision("overlay", nom="Nom corrigé", adresse="", telephone="__empty__", type="artisan",
                  cree_le="2026-06-01T00:00:00Z", siret="")
    rows.proposition("overlay", "reparer", ["ecran"])
    # Statut: the source removed it, a revision says ACTIF -> hidden.
    rows.acteur("supprime", statut="SUPPRIME")
    rows.revision("supprime", statut="ACTIF")
    rows.proposition("supprime", "reparer", ["ecran"])
    # Per-relation fallback: the revision has labels only -> its labels, the acteur's propositions.
    rows.acteur("fallback")
    rows.proposition("fallback", "reparer", ["ecran"])
    rows.labels("fallback", ["reparacteur"])
    rows.revision("fallback")
    rows.labels("fallback", ["qualirepar"], revision=True)
    # A revision's propositions replace the acteur's.
    rows.acteur("rps")
    rows.proposition("rps", "reparer", ["ecran"])
    rows.revision("rps")
    rows.proposition("rps", "donner", ["petit_electromenager"], revision=True)
    # Dedup parent p1: union of its ACTIF children's sous-catégories per action.
    rows.parent("p1", nom="Parent un")
    rows.acteur("c1", source="refashion", lieu_prestation="SUR_PLACE", telephone="01 11 11 11 11")
    rows.proposition("c1", "reparer", ["ecran"])
    rows.labels("c1", ["reparacteur"])
    rows.services("c1", ["achat_revente_particuliers"])
    rows.acteur("c2", source="ecomaison", lieu_prestation="SUR_PLACE_OU_A_DOMICILE")
    rows.proposition("c2", "reparer", ["petit_electromenager"])
    rows.proposition("c2", "donner", ["ecran"])
    rows.perimetre("c2", "KILOMETRIQUE", "30")
    rows.acteur("c3_inactif", statut="INACTIF")
    rows.proposition("c3_inactif", "trier", ["ecran"])
    rows.acteur("c6_non_libre", source="cmareparacteur")
    rows.proposition("c6_non_libre", "acheter", ["ecran"])
    for child in CHILDREN_OF_P1:
        # A revision's statut is never empty (NOT NULL DEFAULT 'ACTIF'): it carries the INACTIF.
        rows.revision(child, parent_id="p1", statut="INACTIF" if "inactif" in child else "ACTIF")
    # ACTIF child of an INACTIF parent; a parent whose only child is INACTIF.
    rows.parent("p2_inactif", statut="INACTIF")
    rows.acteur("c4")
    rows.proposition("c4", "reparer", ["ecran"])
    rows.revision("c4", parent_id="p2_inactif")
    rows.parent("p3_sans_actif")
    rows.acteur("c5_inactif", statut="INACTIF")
    rows.proposition("c5_inactif", "reparer", ["ecran"])
    rows.revision("c5_inactif", parent_id="p3_sans_actif", statut="INACTIF")
    # Publics not shown; home service only; digital acteur.
    for name, public in (("pro", "Professionnels"), ("aucun", "Aucun"), ("pro_minuscules", "professionnels")):
        rows.acteur(name, public_accueilli=public)
        rows.proposition(name, "reparer", ["ecran"])
    rows.acteur("domicile", lieu_prestation="A_DOMICILE", adresse_complement="bât. B")
    rows.proposition("domicile", "reparer", ["ecran"])
    rows.acteur("digital", type="acteur_digital", location=None, source="ademedigitaux")
    rows.proposition("digital", "acheter", ["ecran"])
    # No proposition with a sous-catégorie.
    rows.acteur("sans_sous_categorie")
    rows.proposition("sans_sous_categorie", "reparer", [])
    # Open data: mobile numbers, carteco, licence.
    rows.acteur("mobile", telephone="06 12 34 56 78")
    rows.proposition("mobile", "reparer", ["ecran"])
    rows.acteur("fixe", telephone="01 23 45 67 89")
    rows.proposition("fixe", "reparer", ["ecran"])
    rows.acteur("carteco", telephone="01 23 45 67 89", source="carteco")
    rows.proposition("carteco", "reparer", ["ecran"])
    rows.acteur("non_libre", source="cmareparacteur")
    rows.proposition("non_libre", "reparer", ["ecran"])
    rows.acteur("https://exemple.fr/acteur")
    rows.proposition("https://exemple.fr/acteur", "reparer", ["ecran"])
    # Bad input: a parent that has a parent, a cycle, a missing parent.
    rows.parent("grand_parent")
    rows.parent("parent_enfant", parent_id="grand_parent")
    rows.acteur("petit_enfant")
    rows.proposition("petit_enfant", "reparer", ["ecran"])
    rows.revision("petit_enfant", parent_id="parent_enfant")
    rows.acteur("cycle_a")
    rows.proposition("cycle_a", "reparer", ["ecran"])
    rows.acteur("cycle_b")
    rows.proposition("cycle_b", "reparer", ["ecran"])
    rows.revision("cycle_a", parent_id="cycle_b")
    rows.revision("cycle_b", parent_id="cycle_a")
    # The webapp's foreign key forbids a missing parent; production data has had them.
    rows.conn.execute("SET session_replication_role = replica")
    rows.acteur("orphelin")
    rows.proposition("orphelin", "reparer", ["ecran"])
    rows.revision("orphelin", parent_id="parent_disparu")
    rows.conn.execute("SET session_replication_role = DEFAULT")


@pytest.fixture(scope="module")
def carte(postgres, carte_template) -> Any:
    name = f"carte_compute_{os.getpid()}"
    postgres.create_database(name, template=carte_template)
    dsn = postgres.dsn(name)
    scratch = Path(tempfile.mkdtemp(prefix="carte-dbt-"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():  # the webapp's foreign keys are deferred: cycles need one transaction
            _scenario(CarteRows(conn))
        built = build(dsn, scratch)
        swapped = swap(dsn)
        yield {"dsn": dsn, "conn": conn, "scratch": scratch, "built": built, "swapped": swapped}
    shutil.rmtree(scratch, ignore_errors=True)
    postgres.drop_database(name)


def _displayed(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT identifiant_unique FROM qfdmo_displayedacteur")}


def _one(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or []]
    row = cur.fetchone()
    return dict(zip(names, row, strict=True)) if row else None


def _ps(conn: psycopg.Connection, table: str, identifiant: str) -> dict[str, set[str]]:
    prefix = "displayed" if table == "displayed" else "vue"
    rows = conn.execute(
        f"SELECT ps.id, a.code, sc.code FROM qfdmo_{prefix}propositionservice ps"
        f" JOIN qfdmo_action a ON a.id = ps.action_id"
        f" LEFT JOIN qfdmo_{prefix}propositionservice_sous_categories psc ON psc.{prefix}propositionservice_id = ps.id"
        f" LEFT JOIN qfdmo_souscategorieobjet sc ON sc.id = psc.souscategorieobjet_id"
        f" WHERE ps.acteur_id = %s", (identifiant,)).fetchall()
    result: dict[str, set[str]] = {}
    for ps_id, action, sous_categorie in rows:
        result.setdefault(f"{ps_id}:{action}", set()).update([sous_categorie] if sous_categorie else [])
    return result


def test_build_passed_and_swap_wrote_the_webapp_tables(carte):
    # 40 tests; the keys' uniqueness is checked by the models' unique indexes, not by tests.
    assert carte["built"].success and carte["built"].summary()["tests"] >= 40
    assert carte["swapped"].status == "swapped"
    assert carte["swapped"].rows_after["qfdmo_displayedacteur"] == len(_displayed(carte["conn"]))


def test_what_the_carte_displays(carte):
    assert _displayed(carte["conn"]) == {
        "overlay", "fallback", "rps", "p1", "digital", "mobile", "fixe", "carteco", "non_libre",
        "https://exemple.fr/acteur", "petit_enfant", "cycle_a", "cycle_b", "orphelin",
    }


def test_overlay_of_text_sentinel_non_text_and_cree_le(carte):
    conn = carte["conn"]
    shown = _one(conn, "SELECT d.nom, d.adresse, d.telephone, d.siret, t.code AS type, d.cree_le::date::text AS cree_le"
                       " FROM qfdmo_displayedacteur d JOIN qfdmo_acteurtype t ON t.id = d.acteur_type_id"
                       " WHERE identifiant_unique = 'overlay'")
    assert shown == {"nom": "Nom corrigé", "adresse": "3 rue Source", "telephone": "", "siret": "12345678900011",
                     "type": "artisan", "cree_le": "2020-01-02"}
    kept = _one(conn, "SELECT telephone, revision_existe FROM qfdmo_vueacteur WHERE identifiant_unique = 'overlay'")
    assert kept == {"telephone": "__empty__", "revision_existe": True}


def test_statut_of_a_removed_acteur_wins_over_its_revision(carte):
    assert _one(carte["conn"], "SELECT statut, est_dans_carte FROM qfdmo_vueacteur"
                               " WHERE identifiant_unique = 'supprime'") \
        == {"statut": "SUPPRIME", "est_dans_carte": False}


def test_revision_relations_replace_the_acteurs_per_relation(carte):
    conn = carte["conn"]
    labels = {r[0] for r in conn.execute(
        "SELECT l.code FROM qfdmo_displayedacteur_labels x JOIN qfdmo_labelqualite l ON l.id = x.labelqualite_id"
        " WHERE displayedacteur_id = 'fallback'")}
    assert labels == {"qualirepar"}
    assert [k.split(":")[1] for k in _ps(conn, "displayed", "fallback")] == ["reparer"]
    assert all(k.startswith("PS_") for k in _ps(conn, "displayed", "fallback"))
    rps = _ps(conn, "displayed", "rps")
    assert len(rps) == 1 and next(iter(rps)).startswith("RPS_") and next(iter(rps.values())) == {"petit_electromenager"}


def test_parent_gets_the_union_of_its_active_children(carte):
    conn = carte["conn"]
    rows = CarteRows(conn)
    expected = {
        f"p1_{rows.id_of('qfdmo_action', 'reparer')}:reparer": {"ecran", "petit_electromenager"},
        f"p1_{rows.id_of('qfdmo_action', 'donner')}:donner": {"ecran"},
        f"p1_{rows.id_of('qfdmo_action', 'acheter')}:acheter": {"ecran"},
    }
    assert _ps(conn, "displayed", "p1") == expected
    sources = {r[0] for r in conn.execute(
        "SELECT s.code FROM qfdmo_displayedacteur_sources x JOIN qfdmo_source s ON s.id = x.source_id"
        " WHERE displayedacteur_id = 'p1'")}
    assert sources == {"refashion", "ecomaison", "cmareparacteur"}
    assert {r[0] for r in conn.execute(
        "SELECT type || ':' || valeur FROM qfdmo_displayedperimetreadomicile WHERE acteur_id = 'p1'")} \
        == {"KILOMETRIQUE:30"}
    parent = _one(conn, "SELECT nom, lieu_prestation, source_id FROM qfdmo_displayedacteur"
                        " WHERE identifiant_unique = 'p1'")
    assert parent == {"nom": "Parent un", "lieu_prestation": "SUR_PLACE_OU_A_DOMICILE", "source_id": None}
    vue = _one(conn, "SELECT est_parent, nombre_enfants, liste_enfants FROM qfdmo_vueacteur"
                     " WHERE identifiant_unique = 'p1'")
    assert vue == {"est_parent": True, "nombre_enfants": 4, "liste_enfants": sorted(CHILDREN_OF_P1)}
    children = conn.execute("SELECT identifiant_unique, parent_id, est_dans_carte FROM qfdmo_vueacteur"
                            " WHERE parent_id = 'p1' ORDER BY 1").fetchall()
    assert children == [(c, "p1", False) for c in sorted(CHILDREN_OF_P1)]


def test_children_and_parents_that_are_not_displayed(carte):
    conn = carte["conn"]
    hidden = {r[0]: r[1] for r in conn.execute(
        "SELECT identifiant_unique, statut FROM qfdmo_vueacteur WHERE identifiant_unique = ANY(%s)",
        (["p2_inactif", "c4", "p3_sans_actif", "c5_inactif"],))}
    assert hidden == {"p2_inactif": "INACTIF", "c4": "ACTIF", "p3_sans_actif": "ACTIF", "c5_inactif": "INACTIF"}
    assert not _displayed(conn) & set(hidden)


def test_bad_parent_links_leave_orphans_counted_in_the_report(carte):
    conn = carte["conn"]
    vue = dict(conn.execute("SELECT identifiant_unique, parent_id FROM qfdmo_vueacteur WHERE identifiant_unique"
                            " = ANY(%s)", (["petit_enfant", "cycle_a", "cycle_b", "orphelin", "parent_enfant"],),
                            ).fetchall())
    assert vue == {"petit_enfant": None, "cycle_a": None, "cycle_b": None, "orphelin": None,
                   "parent_enfant": "grand_parent"}
    stats = build_statistics(conn)
    assert stats["orphans_by_reason"] == {"cycle": 2, "parent_absent": 1, "parent_a_un_parent": 1}
    assert stats["excluded_by_reason"]["public"] == 3
    assert stats["excluded_by_reason"]["a_domicile"] == 1
    assert stats["excluded_by_reason"]["statut"] == 2  # supprime, p2_inactif (INACTIF children count as children)
    assert stats["parents"]["displayed"] == 1


def test_public_uuid_is_shortuuids(carte):
    rows = carte["conn"].execute("SELECT identifiant_unique, uuid FROM qfdmo_vueacteur").fetchall()
    assert len(rows) >= 30
    assert all(uuid == shortuuid.uuid(name=identifiant) for identifiant, uuid in rows)
    assert len({uuid for _, uuid in rows}) == len(rows)


def test_open_data_rows_and_columns(carte):
    conn = carte["conn"]
    cur = conn.execute("SELECT * FROM qfdmo_carte.opendata_acteur")
    columns = [d.name for d in cur.description or []]
    by_uuid = {row[0]: dict(zip(columns, row, strict=True)) for row in cur}
    assert len(columns) == 44 and columns[:3] == ["identifiant", "paternite", "identifiants_des_contributeurs"]
    rows = {name: by_uuid.get(shortuuid.uuid(name=name)) for name in (
        "domicile", "mobile", "fixe", "carteco", "non_libre", "p1", "digital", "pro")}
    assert rows["non_libre"] is None and rows["pro"] is None
    assert rows["domicile"]["adresse"] == "" and rows["domicile"]["complement_dadresse"] == ""
    assert rows["domicile"]["code_postal"] == "75002" and rows["domicile"]["ville"] == "Paris"
    assert rows["mobile"]["telephone"] == "" and rows["fixe"]["telephone"] == "01 23 45 67 89"
    assert rows["carteco"]["telephone"] == ""
    parent = rows["p1"]
    assert parent["paternite"] == "Que faire de mes objets et déchets|ADEME|Ecomaison|Re_fashion" or \
        parent["paternite"].startswith("Que faire de mes objets et déchets|ADEME|")
    assert "cmareparacteur" not in parent["paternite"].lower() and "CMA" not in parent["paternite"]
    assert parent["acheter"] == "" and parent["reparer"] == "ecran|petit_electromenager"
    assert json.loads(parent["propositions_de_services"]) == [
        {"action": "donner", "sous_categories": ["ecran"]},
        {"action": "reparer", "sous_categories": ["ecran", "petit_electromenager"]},
    ]
    assert len(json.loads(parent["identifiants_des_contributeurs"])) == 2
    assert rows["digital"]["latitude"] is None and rows["digital"]["type_dacteur"] == "acteur_digital"


# ----------------------------------------------------------------------------------- changes
# Tests below change the carte; they run after the rule tests above (pytest keeps file order).

def test_acteur_back_in_its_feed_is_displayed_again_and_the_swap_writes_only_the_difference(carte):
    conn = carte["conn"]
    conn.execute("UPDATE qfdmo_acteur SET statut = 'ACTIF' WHERE identifiant_unique = 'supprime'")
    build(carte["dsn"], carte["scratch"])
    result = swap(carte["dsn"])
    assert "supprime" in _displayed(conn)
    assert result.rows_written["qfdmo_displayedacteur"] == {"deleted": 0, "updated": 0, "inserted": 1}
    assert result.rows_written["qfdmo_vueacteur"]["updated"] == 1
    assert swap(carte["dsn"]).as_dict()["total_rows_written"] == 0  # nothing changed since


def test_failing_dbt_test_raises_and_leaves_the_webapp_tables_as_they_were(carte):
    conn = carte["conn"]
    before = _checksums(conn)
    conn.execute("UPDATE qfdmo_revisionacteur SET statut = 'BIZARRE' WHERE identifiant_unique = 'overlay'")
    try:
        with pytest.raises(DbtBuildError, match="accepted_values"):
            build(carte["dsn"], carte["scratch"], select=["int_acteur_overlay"])
    finally:
        conn.execute("UPDATE qfdmo_revisionacteur SET statut = 'ACTIF' WHERE identifiant_unique = 'overlay'")
    assert _checksums(conn) == before


SWAPPED_TABLES = [t.table for t in TARGETS]


def _checksums(conn: psycopg.Connection) -> dict[str, tuple]:
    """Every row of every swapped table with its physical place: equal means untouched."""
    return {table: conn.execute(
        f"SELECT count(*), md5(coalesce(string_agg(t.ctid::text || t::text, '|' ORDER BY t.ctid), ''))"
        f" FROM {table} AS t").fetchone() for table in SWAPPED_TABLES}


def _add_model_acteurs(conn: psycopg.Connection, prefix: str, count: int) -> None:
    """Synthetic displayed acteurs straight into the carte model (copies of 'fixe')."""
    columns = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'qfdmo_carte'"
        " AND table_name = 'carte_acteur' AND column_name NOT IN ('identifiant_unique', 'uuid')")]
    listed = ", ".join(columns)
    conn.execute(
        f"INSERT INTO qfdmo_carte.carte_acteur (identifiant_unique, uuid, {listed})"
        f" SELECT %s || n, %s || n, {listed} FROM qfdmo_carte.carte_acteur, generate_series(1, %s) AS n"
        f" WHERE identifiant_unique = 'fixe'", (prefix, prefix, count))


def _drop_model_acteurs(conn: psycopg.Connection, prefix: str) -> None:
    conn.execute("DELETE FROM qfdmo_carte.carte_acteur WHERE identifiant_unique LIKE %s", (prefix + "%",))


def test_a_reader_sees_the_old_set_or_the_new_set_never_a_mix(carte):
    import threading

    conn, dsn = carte["conn"], carte["dsn"]
    _add_model_acteurs(conn, "ancien_", 20_000)
    swap(dsn, force=True)
    _drop_model_acteurs(conn, "ancien_")
    _add_model_acteurs(conn, "nouveau_", 15_000)
    query = "SELECT count(*), sum(hashtext(identifiant_unique)) FROM qfdmo_displayedacteur"
    old = conn.execute(query).fetchone()
    seen: set[tuple] = set()
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(dsn, autocommit=True) as reader:
            while not stop.is_set():
                seen.add(reader.execute(query).fetchone())

    thread = threading.Thread(target=read)
    thread.start()
    try:
        result = swap(dsn, max_drop_share=1.0)
    finally:
        stop.set()
        thread.join()
    new = conn.execute(query).fetchone()
    assert result.status == "swapped" and old != new
    assert seen <= {old, new} and old in seen
    assert all(count > 0 for count, _ in seen)


def test_guard_stops_the_swap_and_leaves_the_tables_byte_for_byte(carte):
    conn, dsn = carte["conn"], carte["dsn"]
    before = _checksums(conn)
    _drop_model_acteurs(conn, "nouveau_")  # 15,000 of 15,015 displayed acteurs would go
    result = swap(dsn)
    assert result.status == "needs_approval" and result.guard["needs_approval"]
    assert result.guard["displayed_current"] > 15_000 and result.guard["drop_share"] > 0.9
    assert _checksums(conn) == before


def test_connection_killed_mid_swap_leaves_the_tables_intact(carte):
    import threading

    conn, dsn = carte["conn"], carte["dsn"]
    before = _checksums(conn)
    errors: list[BaseException] = []
    with psycopg.connect(dsn) as blocker:
        # SHARE conflicts with the swap's ROW EXCLUSIVE: the swap writes the vue and the displayed
        # relations, then waits for qfdmo_displayedacteur, where it is killed.
        blocker.execute("LOCK TABLE qfdmo_displayedacteur IN SHARE MODE")

        def run() -> None:
            try:
                swap(dsn, force=True, lock_timeout_s=60, attempts=1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        pid = None
        for _ in range(600):
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                               " AND wait_event_type = 'Lock'", (APPLICATION_NAME,)).fetchone()
            if row:
                pid = row[0]
                break
            thread.join(0.1)
        assert pid, "the swap never waited for the lock"
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(30)
        blocker.rollback()
    assert errors and isinstance(errors[0], psycopg.OperationalError)
    assert _checksums(conn) == before


def test_lock_wait_is_bounded_then_the_swap_fails_with_nothing_written(carte):
    conn, dsn = carte["conn"], carte["dsn"]
    before = _checksums(conn)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("LOCK TABLE qfdmo_vueacteur IN SHARE MODE")
        with pytest.raises(SwapError, match="2 attempts"):
            swap(dsn, force=True, lock_timeout_s=0.2, attempts=2)
        blocker.rollback()
    assert _checksums(conn) == before
