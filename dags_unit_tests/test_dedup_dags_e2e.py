"""cluster_acteurs and apply_suggestions through the real Airflow CLI (`bin/airflow dags test`) on the
test stack's carte DB (dry_run is covered by test_dedup_carte.py): a run writes one cohorte, the
reviewer validates two clusters and rejects one, apply_suggestions applies them and emits the
carte_acteurs asset, and after the recomputation a second run proposes none of them again."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from fakes.dedup_carte import insert_acteurs, insert_parent, recompute_parents_in_vue

PREFIX = "dedup_e2e_"


def _acteur(suffix: str, source: int, nom: str, adresse: str, lat: float, lon: float, code_postal: str,
            ville: str, **fields):
    row = {"identifiant_unique": PREFIX + suffix, "nom": nom, "adresse": adresse, "code_postal": code_postal,
           "ville": ville, "latitude": lat, "longitude": lon, "siret": "", "siren": "", "telephone": "",
           "url": "", "email": "", "acteur_type_id": 2, "source_id": source}
    row.update(fields)
    return row


ROWS = [
    _acteur("a1", 1, "Atelier Vélo Martin", "12 Boulevard Voltaire", 48.86, 2.379, "75011", "Paris",
            telephone="0143001122"),
    _acteur("a2", 2, "ATELIER VELO MARTIN SARL", "12 bd Voltaire", 48.8602, 2.3791, "75011", "Paris",
            telephone="01 43 00 11 22"),
    _acteur("b1", 1, "Ressourcerie du Centre", "3 Rue de la Gare", 45.76, 4.835, "69002", "Lyon"),
    _acteur("b2", 3, "Ressourcerie Du Centre", "3, rue de la gare", 45.7601, 4.8351, "69002", "Lyon"),
    _acteur("c1", 1, "Cordonnerie Dupont", "8 Place Carnot", 47.218, -1.553, "44000", "Nantes"),
    _acteur("c3", 3, "Cordonnerie Dupont", "8 Pl Carnot", 47.21805, -1.55302, "44000", "Nantes"),
]


def _dags_test(stack, dag_id: str, conf: dict | None = None) -> tuple[dict, str]:
    folder = Path(stack.env["QFDMO_DATA_DIR"]) / "reports" / dag_id
    before = set(folder.glob("*.json")) if folder.exists() else set()
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf is not None else [])
    result = stack.airflow(*args, timeout=600)
    output = result.stdout + result.stderr
    created = sorted(set(folder.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    assert result.returncode == 0 and created, output[-6000:]
    return json.loads(created[-1].read_text()), output


def _by_members(conn, run_id: str) -> dict[frozenset, tuple]:
    rows = conn.execute(
        "SELECT s.id, s.statut, s.contexte FROM data_suggestion s JOIN data_suggestioncohorte c"
        " ON c.id = s.suggestion_cohorte_id WHERE c.identifiant_execution = %s", (run_id,)).fetchall()
    return {frozenset(m["identifiant_unique"].removeprefix(PREFIX) for m in r[2]["members"]): r for r in rows}


@pytest.fixture
def carte(airflow_stack):
    dsn = airflow_stack.carte_dsn
    with psycopg.connect(dsn) as conn:
        insert_acteurs(conn, ROWS)
        insert_parent(conn, PREFIX + "p_c", "Cordonnerie Dupont", [PREFIX + "c1"], acteur_type_id=2,
                      latitude=47.218, longitude=-1.553, adresse="8 Place Carnot", code_postal="44000",
                      ville="Nantes")
    yield dsn
    # Leave the shared stack's carte DB as it was (other end-to-end tests use it).
    with psycopg.connect(dsn) as conn:
        ours = [PREFIX + "%", _new_parent_ids.get("a", PREFIX)]
        conn.execute("DELETE FROM data_suggestion s USING data_suggestioncohorte c"
                     " WHERE c.id = s.suggestion_cohorte_id AND c.identifiant_action = 'cluster_acteurs'")
        conn.execute("DELETE FROM data_suggestioncohorte WHERE identifiant_action = 'cluster_acteurs'")
        for table in ("qfdmo_vueacteur", "qfdmo_revisionacteur"):
            conn.execute(f"UPDATE {table} SET parent_id = NULL WHERE identifiant_unique LIKE ANY(%s)", (ours,))
            conn.execute(f"DELETE FROM {table} WHERE identifiant_unique LIKE ANY(%s)", (ours,))
        conn.execute("DELETE FROM qfdmo_acteur WHERE identifiant_unique LIKE ANY(%s)", (ours,))


_new_parent_ids: dict[str, str] = {}


def test_cluster_review_apply_and_cluster_again(airflow_stack, carte):
    report, output = _dags_test(airflow_stack, "cluster_acteurs", {})
    assert report["clusters"] == 3 and report["suggestions_written"] == 3 and report["kept_parents"] == 1
    assert "seconds:" in output
    with psycopg.connect(carte, autocommit=True) as conn:
        found = _by_members(conn, report["run_id"])
        assert set(found) == {frozenset({"a1", "a2"}), frozenset({"b1", "b2"}), frozenset({"p_c", "c3"})}
        # As the admin's actions do.
        conn.execute("UPDATE data_suggestion SET statut = 'ATRAITER' WHERE id = ANY(%s)",
                     ([found[frozenset({"a1", "a2"})][0], found[frozenset({"p_c", "c3"})][0]],))
        conn.execute("UPDATE data_suggestion SET statut = 'REJETEE' WHERE id = %s",
                     (found[frozenset({"b1", "b2"})][0],))
        _new_parent_ids["a"] = found[frozenset({"a1", "a2"})][2]["parent_id"]

    applied, output = _dags_test(airflow_stack, "apply_suggestions")
    assert (applied["picked"], applied["succes"], applied["erreur"]) == (2, 2, 0), output[-3000:]
    assert list(applied["cohortes"].values()) == ["SUCCES"]
    events = airflow_stack.api("GET", "/api/v2/assets/events?limit=100&order_by=-timestamp")
    assert any(e.get("source_dag_id") == "apply_suggestions" for e in events["asset_events"])
    with psycopg.connect(carte, autocommit=True) as conn:
        parents = dict(conn.execute(
            "SELECT identifiant_unique, parent_id FROM qfdmo_revisionacteur WHERE identifiant_unique LIKE %s",
            (PREFIX + "%",)).fetchall())
        assert parents[PREFIX + "a1"] == parents[PREFIX + "a2"] == _new_parent_ids["a"]
        assert parents[PREFIX + "c3"] == PREFIX + "p_c"
        assert PREFIX + "b1" not in parents
        recompute_parents_in_vue(conn)  # stands in for compute_acteurs, which the asset event triggers

    again, _ = _dags_test(airflow_stack, "cluster_acteurs", {})
    assert again["clusters"] == 0 and again["merges_refused_rejected_before"] >= 1
