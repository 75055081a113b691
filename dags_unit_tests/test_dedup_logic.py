"""The dedup's pure logic, without a database: params validation, normalisation (DuckDB in memory),
constrained clustering, parent choice and data, the suggestion's changes, the generator's labels."""

from __future__ import annotations

import duckdb
import pytest
from fakes.dedup_acteurs import generate, true_pairs
from qfdmo.dedup.clusters import Member, cluster, new_parent_id, parent_data, suggestion_for
from qfdmo.dedup.features import normalise_sql
from qfdmo.dedup.params import ClusteringParams, ParamsError


def test_params_defaults_and_clear_errors():
    params = ClusteringParams.parse({})
    assert params.match_threshold == 0.9 and not params.intra_source and not params.dry_run
    assert "distance" in params.compared_fields
    with pytest.raises(ParamsError) as error:
        ClusteringParams.parse({"match_threshold": 1.5, "compared_fields": ["nom", "couleur"], "typo": 1})
    message = str(error.value)
    assert "match_threshold: Input should be less than 1" in message
    assert "compared_fields.1:" in message and "typo: Extra inputs are not permitted" in message
    with pytest.raises(ParamsError, match="listed twice: a"):
        ClusteringParams.parse({"sources": ["a", "b", "a"]})
    with pytest.raises(ParamsError, match="at least one of nom"):
        ClusteringParams.parse({"compared_fields": ["code_postal", "ville"]})


def _normalise(rows: list[dict]) -> list[dict]:
    con = duckdb.connect()
    con.execute("CREATE TABLE raw (identifiant_unique VARCHAR, est_parent BOOLEAN, sources INTEGER[],"
                " acteur_type_id INTEGER, nom VARCHAR, adresse VARCHAR, code_postal VARCHAR, ville VARCHAR,"
                " telephone VARCHAR, url VARCHAR, email VARCHAR, siret VARCHAR, siren VARCHAR,"
                " latitude DOUBLE, longitude DOUBLE)")
    for i, row in enumerate(rows):
        values = {"identifiant_unique": str(i), "est_parent": False, "sources": [1], "acteur_type_id": 1,
                  "nom": "", "adresse": "", "code_postal": "", "ville": "", "telephone": "", "url": "", "email": "",
                  "siret": "", "siren": "", "latitude": None, "longitude": None, **row}
        con.execute("INSERT INTO raw BY NAME SELECT " + ", ".join(f"? AS {k}" for k in values), list(values.values()))
    con.execute(normalise_sql())
    cursor = con.execute("SELECT * FROM acteurs ORDER BY identifiant_unique::INT")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def test_normalisation_makes_the_usual_variants_equal():
    a, b, c = _normalise([
        {"nom": "Atelier Vélo de Saint-Jacques SARL", "adresse": "12 Bd Voltaire Bât B", "telephone": "01 43 00 11 22",
         "url": "https://www.velo-stjacques.fr/contact", "siret": "12345678900011"},
        {"nom": "ST JACQUES atelier velo", "adresse": "12, boulevard voltaire", "telephone": "+33143001122",
         "url": "http://velo-stjacques.fr", "latitude": 0.0, "longitude": 0.0},
        {"nom": "", "adresse": "", "code_postal": "", "telephone": "12"},
    ])
    assert a["nom_norm"] == b["nom_norm"] == "atelier jacques saint velo"
    assert a["adresse_norm"] == b["adresse_norm"] == "12 boulevard voltaire"
    assert a["adresse_numero"] == "12"
    assert a["telephone_norm"] == b["telephone_norm"] == "143001122"
    assert a["url_domain"] == b["url_domain"] == "velo-stjacques.fr"
    assert a["siren"] == "123456789" and b["siren"] is None
    assert b["latitude"] is None  # 0, 0 is no location
    assert (c["nom_norm"], c["adresse_norm"], c["code_postal"], c["telephone_norm"]) == (None, None, None, None)


def _member(identifiant: str, source: int | None, parent: bool = False, children=(), **data) -> Member:
    return Member(identifiant, parent, source, data, list(children))


def _pair(a: str, b: str, weight: float) -> dict:
    return {"a": a, "b": b, "match_weight": weight, "match_probability": 0.99, "fields": {}}


def test_clustering_refuses_same_source_and_rejected_pairs():
    members = {
        "x1": _member("x1", 1), "x2": _member("x2", 2), "x3": _member("x3", 1),
        "p": _member("p", None, True, [("c1", "ACTIF", 3), ("c2", "INACTIF", 4)]), "y4": _member("y4", 4),
        "z1": _member("z1", 5), "z2": _member("z2", 6),
    }
    pairs = [_pair("x1", "x2", 10), _pair("x2", "x3", 9), _pair("p", "y4", 8), _pair("z1", "z2", 7)]
    outcome = cluster(members, pairs, rejected=[("z2", "z1")])
    # x3 shares source 1 with x1; the INACTIF child's source 4 does not block y4; z1/z2 were rejected.
    assert [c.members for c in outcome.clusters] == [["p", "y4"], ["x1", "x2"]]
    assert (outcome.refused_same_source, outcome.refused_rejected) == (1, 1)
    assert [c.members for c in cluster(members, pairs, intra_source=True).clusters] == [
        ["p", "y4"], ["x1", "x2", "x3"], ["z1", "z2"]]


def test_new_parent_id_is_deterministic_and_order_free():
    assert new_parent_id(["b", "a"]) == new_parent_id(["a", "b"]) != new_parent_id(["a", "c"])


def test_parent_data_follows_priority_and_skips_empty_values():
    first = _member("m1", 1, nom="Atelier", adresse="", telephone="__empty__", latitude=None, longitude=None)
    second = _member("m2", 2, nom="ATELIER", adresse="3 rue X", telephone="0102030405", latitude=48.0, longitude=2.0)
    data = parent_data([first, second])
    assert data == {"nom": "Atelier", "adresse": "3 rue X", "telephone": "0102030405", "latitude": 48.0,
                    "longitude": 2.0}


def test_suggestion_keeps_the_parent_with_most_active_children_and_moves_the_others():
    members = {
        "big": _member("big", None, True, [("b1", "ACTIF", 1), ("b2", "ACTIF", 2)], nom="Grand"),
        "small": _member("small", None, True, [("s1", "ACTIF", 3), ("s2", "INACTIF", 4)], nom="Petit"),
        "o": _member("o", 5, nom="Orphelin", code_postal="75011"),
    }
    found = cluster(members, [_pair("big", "small", 9), _pair("small", "o", 8)]).clusters[0]
    proposal = suggestion_for(found, members, source_priority=[5])
    changes = [(c["order"], c["model_name"], c["model_params"]["id"]) for c in proposal["suggestion"]["changes"]]
    assert changes == [
        (1, "acteur_keep_as_parent", "big"), (2, "acteur_update_parent_id", "o"),
        (3, "acteur_update_parent_id", "s1"), (4, "acteur_delete_as_parent", "small")]
    kept_data = proposal["suggestion"]["changes"][0]["model_params"]["data"]
    assert kept_data["nom"] == "Grand" and kept_data["code_postal"] == "75011"  # the kept parent first
    assert proposal["contexte"]["parent_id"] == "big"
    assert {m["identifiant_unique"] for m in proposal["contexte"]["members"]} == {"big", "small", "o"}


def test_generator_labels_duplicates_and_hard_negatives():
    rows = generate(2000, seed=3)
    assert len(rows) == 2000 and len({r["identifiant_unique"] for r in rows}) == 2000
    pairs = true_pairs(rows)
    in_groups = {i for pair in pairs for i in pair}
    assert 0.08 <= len(in_groups) / len(rows) <= 0.12
    by_id = {r["identifiant_unique"]: r for r in rows}
    assert all(by_id[a]["source_id"] != by_id[b]["source_id"] for a, b in pairs)  # duplicates span sources
