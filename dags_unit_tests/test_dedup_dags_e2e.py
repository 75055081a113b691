"""The dedup end to end on the test stack, with the real compute_acteurs: acteurs of several sources
(and their propositions) in the webapp's tables as source runs leave them → `compute_acteurs`
fills qfdmo_vue* / qfdmo_displayed* → `cluster_acteurs` proposes three clusters → the reviewer
validates two (a new parent, an existing parent that gains a child) and rejects one, as the admin
does → `apply_suggestions` applies them and emits the carte_acteurs asset → the compute_acteurs run
that event starts through the scheduler (nobody triggers it) shows each parent instead of its
children, with their propositions merged, and the rejected cluster's acteurs apart → a second
`cluster_acteurs` proposes none of them again. (dry_run, stale suggestions, crash-left ENCOURS and
a clustering between the apply and the recomputation: test_dedup_carte.py, test_dedup_apply.py.)"""

from __future__ import annotations

import psycopg
from fakes.carte_rows import CarteRows
from stack_runs import report_of, run_to_success, runs_created_by_events, set_paused, succeeded, trigger, wait_idle

PREFIX = "dedup_e2e_"
# Sources no other end-to-end test writes: the clustering is restricted to them, so what other tests
# left in the shared carte is never clustered here.
SOURCES = ["pyreo", "soren", "cyclevia"]
# Acteurs of another source, far apart and never clustered: the carte is large enough that the
# applied merges (2 fewer displayed acteurs) stay under compute_acteurs' guard (5 %) even when this
# test runs alone on a fresh stack.
FILLERS = 40


def _acteur(rows: CarteRows, suffix: str, source: str, nom: str, adresse: str, lon: float, lat: float,
            code_postal: str, ville: str, propositions: dict[str, list[str]], **fields) -> str:
    identifiant = rows.acteur(PREFIX + suffix, source=source, type="artisan", nom=nom, adresse=adresse,
                              location=(lon, lat), code_postal=code_postal, ville=ville, **fields)
    for action, sous_categories in propositions.items():
        rows.proposition(identifiant, action, sous_categories)
    return identifiant


def _carte(conn: psycopg.Connection) -> None:
    rows = CarteRows(conn)
    # A: one repairer, two sources -> a new parent.
    _acteur(rows, "a1", "pyreo", "Atelier Vélo Martin", "12 Boulevard Voltaire", 2.379, 48.86, "75011", "Paris",
            {"reparer": ["ecran"]}, telephone="0143001122")
    _acteur(rows, "a2", "soren", "ATELIER VELO MARTIN SARL", "12 bd Voltaire", 2.3791, 48.8602, "75011", "Paris",
            {"reparer": ["petit_electromenager"], "donner": ["ecran"]}, telephone="01 43 00 11 22")
    # B: one ressourcerie, two sources; the reviewer rejects it.
    _acteur(rows, "b1", "pyreo", "Ressourcerie du Centre", "3 Rue de la Gare", 4.835, 45.76, "69002", "Lyon",
            {"donner": ["ecran"]})
    _acteur(rows, "b2", "cyclevia", "Ressourcerie Du Centre", "3, rue de la gare", 4.8351, 45.7601, "69002", "Lyon",
            {"donner": ["petit_electromenager"]})
    # C: an existing parent (child c1) and a new orphan c3 of the same place: c3 joins the parent.
    rows.parent(PREFIX + "p_c", nom="Cordonnerie Dupont", type="artisan", location=(-1.553, 47.218),
                adresse="8 Place Carnot", code_postal="44000", ville="Nantes")
    _acteur(rows, "c1", "pyreo", "Cordonnerie Dupont", "8 Place Carnot", -1.553, 47.218, "44000", "Nantes",
            {"reparer": ["ecran"]})
    rows.revision(PREFIX + "c1", parent_id=PREFIX + "p_c")
    _acteur(rows, "c3", "cyclevia", "Cordonnerie Dupont", "8 Pl Carnot", -1.55302, 47.21805, "44000", "Nantes",
            {"reparer": ["smartphone_tablette_et_console"]})
    for i in range(FILLERS):
        _acteur(rows, f"filler{i:02d}", "batribox", f"Point de collecte {i}", f"{i + 1} rue des Piles",
                -4.0 + i * 0.2, 43.0 + i * 0.1, f"{10000 + i * 1000:05d}", f"Ville {i}", {"reparer": ["ecran"]})


def _displayed(conn: psycopg.Connection, *others: str) -> dict[str, dict[str, set[str]]]:
    """Our displayed acteurs (and `others`) -> action code -> sous-catégorie codes."""
    ours = "(identifiant_unique LIKE %(prefix)s OR identifiant_unique = ANY(%(others)s))"
    args = {"prefix": PREFIX + "%", "others": list(others)}
    shown: dict[str, dict[str, set[str]]] = {
        r[0]: {} for r in conn.execute(f"SELECT identifiant_unique FROM qfdmo_displayedacteur WHERE {ours}", args)}
    for acteur, action, sous_categorie in conn.execute(
        "SELECT p.acteur_id, a.code, sc.code FROM qfdmo_displayedpropositionservice p"
        " JOIN qfdmo_action a ON a.id = p.action_id"
        " JOIN qfdmo_displayedpropositionservice_sous_categories s ON s.displayedpropositionservice_id = p.id"
        " JOIN qfdmo_souscategorieobjet sc ON sc.id = s.souscategorieobjet_id"
        f" WHERE p.acteur_id IN (SELECT identifiant_unique FROM qfdmo_displayedacteur WHERE {ours})", args,
    ):
        shown[acteur].setdefault(action, set()).add(sous_categorie)
    return shown


def _by_members(conn: psycopg.Connection, cohorte_id: int) -> dict[frozenset, tuple]:
    rows = conn.execute("SELECT id, contexte FROM data_suggestion WHERE suggestion_cohorte_id = %s",
                        (cohorte_id,)).fetchall()
    return {frozenset(m["identifiant_unique"].removeprefix(PREFIX) for m in r[1]["members"]): r for r in rows}


def test_cluster_review_apply_recompute_and_cluster_again(airflow_stack):
    stack, dsn = airflow_stack, airflow_stack.carte_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        _carte(conn)
    # The carte as the sources left it (whatever the earlier tests of the session changed: no
    # guard), computed through the scheduler: compute_acteurs stays unpaused until the asset's run.
    try:
        computed = trigger(stack, "compute_acteurs", {"max_drop_share": 1})
        assert succeeded(stack, "compute_acteurs", computed)
        wait_idle(stack, "compute_acteurs")  # and whatever else the unpause started (queued events)
        _review_apply_recompute(stack, dsn)
    finally:
        set_paused(stack, "compute_acteurs", True)
        wait_idle(stack, "compute_acteurs")


def _review_apply_recompute(stack, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        before = _displayed(conn)
    assert {PREFIX + n for n in ("a1", "a2", "b1", "b2", "p_c", "c3")} <= set(before)
    assert PREFIX + "c1" not in before  # a child: its parent is shown

    # Every run through the scheduler: a `bin/airflow dags test` run is several times slower (it
    # starts an execution API of its own); the CLI path is proved by the source and download e2e.
    _, clustering = run_to_success(stack, "cluster_acteurs", {"sources": SOURCES})
    assert (clustering["clusters"], clustering["suggestions_written"], clustering["kept_parents"]) == (3, 3, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        found = _by_members(conn, clustering["cohorte_id"])
        assert set(found) == {frozenset({"a1", "a2"}), frozenset({"b1", "b2"}), frozenset({"p_c", "c3"})}
        new_parent = found[frozenset({"a1", "a2"})][1]["parent_id"]
        # The reviewer's decisions, as the admin's actions write them.
        conn.execute("UPDATE data_suggestion SET statut = 'ATRAITER' WHERE id = ANY(%s)",
                     ([found[frozenset({"a1", "a2"})][0], found[frozenset({"p_c", "c3"})][0]],))
        conn.execute("UPDATE data_suggestion SET statut = 'REJETEE' WHERE id = %s",
                     (found[frozenset({"b1", "b2"})][0],))

    # compute_acteurs listens to the asset apply_suggestions emits: it must start by itself.
    # A scheduled DAG: `trigger` keeps its unpausing from adding a run.
    applied_run, applied = run_to_success(stack, "apply_suggestions", {})
    assert (applied["picked"], applied["succes"], applied["erreur"]) == (2, 2, 0), applied
    assert list(applied["cohortes"].values()) == ["SUCCES"]
    [recomputed] = runs_created_by_events(stack, "apply_suggestions", applied_run, "compute_acteurs")
    assert succeeded(stack, "compute_acteurs", recomputed)
    assert report_of(stack, "compute_acteurs", recomputed)["outcome"] == "swapped"

    with psycopg.connect(dsn) as conn:
        after = _displayed(conn, new_parent)
    # One parent instead of its children, with their propositions merged; the rejected ones apart.
    assert new_parent in after and not {PREFIX + "a1", PREFIX + "a2"} & set(after)
    assert after[new_parent] == {"reparer": {"ecran", "petit_electromenager"}, "donner": {"ecran"}}
    assert PREFIX + "c3" not in after
    assert after[PREFIX + "p_c"] == {"reparer": {"ecran", "smartphone_tablette_et_console"}}
    assert after[PREFIX + "b1"] == before[PREFIX + "b1"] and after[PREFIX + "b2"] == before[PREFIX + "b2"]
    with psycopg.connect(dsn) as conn:
        links = dict(conn.execute("SELECT identifiant_unique, parent_id FROM qfdmo_vueacteur"
                                  " WHERE identifiant_unique LIKE %s", (PREFIX + "%",)).fetchall())
    assert links[PREFIX + "a1"] == links[PREFIX + "a2"] == new_parent and links[PREFIX + "c3"] == PREFIX + "p_c"

    _, again = run_to_success(stack, "cluster_acteurs", {"sources": SOURCES})
    assert again["clusters"] == 0 and again["merges_refused_rejected_before"] >= 1, again
    assert again["skipped_not_recomputed"] == 0 and again["cohorte_id"] is None
