"""The dedup on a real carte database (PostGIS): clustering reads the exhaustive view and writes one
cohorte of suggestions; apply_suggestions applies the validated ones, refuses stale ones, picks a
crash-left ENCOURS again; a rejected cluster is not proposed again."""

from __future__ import annotations

import psycopg
import pytest
from fakes.dedup_acteurs import generate, true_pairs
from fakes.dedup_carte import insert_acteurs
from qfdmo.dedup.carte import DedupDataError
from qfdmo.dedup.params import ClusteringParams
from qfdmo.dedup.run import run_clustering

DAG_ID = "cluster_acteurs"


def _place(identifiant: str, source_id: int, nom: str = "Atelier Vélo Martin", **fields):
    row = {"identifiant_unique": identifiant, "nom": nom, "adresse": "12 Boulevard Voltaire",
           "code_postal": "75011", "ville": "Paris", "latitude": 48.8600, "longitude": 2.3790,
           "siret": "", "siren": "", "telephone": "0143001122", "url": "", "email": "",
           "acteur_type_id": 1, "source_id": source_id}
    row.update(fields)
    return row


def _cluster(dsn: str, run_id: str = "manual__1", **params):
    return run_clustering(dsn, ClusteringParams(**params), dag_id=DAG_ID, run_id=run_id)


def _suggestions(conn) -> list[tuple]:
    return conn.execute("SELECT id, statut, contexte, suggestion, metadata, suggestion_cohorte_id"
                        " FROM data_suggestion ORDER BY id").fetchall()


def _members(contexte) -> set[str]:
    return {m["identifiant_unique"] for m in contexte["members"]}


@pytest.fixture
def generated_carte(carte_dsn):
    rows = generate(3000, seed=5)
    with psycopg.connect(carte_dsn) as conn:
        insert_acteurs(conn, rows)
    return carte_dsn, rows


def test_clustering_writes_one_cohorte_with_one_suggestion_per_cluster(generated_carte):
    dsn, rows = generated_carte
    report = _cluster(dsn)
    with psycopg.connect(dsn) as conn:
        cohortes = conn.execute("SELECT id, identifiant_action, identifiant_execution, type_action, statut, metadata"
                                " FROM data_suggestioncohorte").fetchall()
        suggestions = _suggestions(conn)
    assert len(cohortes) == 1
    cohorte_id, action, execution, type_action, statut, metadata = cohortes[0]
    assert (action, execution, type_action, statut) == (DAG_ID, "manual__1", "CLUSTERING", "AVALIDER")
    assert metadata["clusters"] == report["clusters"] == len(suggestions) > 50
    assert metadata["acteurs_read"] == 3000
    assert {s[1] for s in suggestions} == {"AVALIDER"}
    # Quality on this small labelled set.
    predicted = set()
    for suggestion in suggestions:
        members = sorted(_members(suggestion[2]))
        predicted |= {(a, b) for i, a in enumerate(members) for b in members[i + 1:]}
    truth = true_pairs(rows)
    assert len(predicted & truth) / len(predicted) >= 0.98
    assert len(predicted & truth) / len(truth) >= 0.9
    # The changes of a new parent, and the evidence shown to the reviewer.
    contexte, suggestion = suggestions[0][2], suggestions[0][3]
    changes = suggestion["changes"]
    assert changes[0]["model_name"] == "acteur_create_as_parent"
    assert [c["order"] for c in changes] == list(range(1, len(changes) + 1))
    assert {c["model_params"]["id"] for c in changes[1:]} == _members(contexte)
    assert {c["model_name"] for c in changes[1:]} == {"acteur_update_parent_id"}
    pair = contexte["pairs"][0]
    assert set(pair["fields"]) == {"nom", "adresse", "code_postal", "ville", "distance", "siret", "telephone",
                                   "url", "email", "acteur_type"}
    assert pair["match_probability"] >= 0.9 and "niveau" in pair["fields"]["nom"]


def test_dry_run_writes_nothing(generated_carte):
    dsn, _ = generated_carte
    report = _cluster(dsn, dry_run=True)
    assert report["clusters"] > 50 and report["suggestions_written"] == 0 and report["cohorte_id"] is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM data_suggestioncohorte").fetchone() == (0,)


def test_unknown_source_code_is_a_clear_error(carte_dsn):
    with pytest.raises(DedupDataError, match="unknown source code"):
        _cluster(carte_dsn, sources=["nope"])
