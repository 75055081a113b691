"""qfdmo.pipeline's steps without Airflow: fake portal -> files -> a real carte database."""

from __future__ import annotations

import json

import psycopg
import pytest
from fakes import feed_server, fixture_rows  # noqa: F401 - pytest fixture
from qfdmo.pipeline import (
    REJECTED,
    SETTLED_OUTCOMES,
    TIMED_OUT,
    Approval,
    PipelineError,
    apply,
    build_report,
    download,
    finish,
    needs_approval,
    normalise,
    report_path,
    run_dir,
    stage,
    to_markdown,
    to_text,
    write_report,
)
from qfdmo.sources import load_declarations


def _run(declaration, url, dsn, tmp_path, name, max_share=0.1, do_apply=True):
    directory = tmp_path / name
    key = f"test_{name}"
    steps = {"download": download(declaration, url, directory)}
    steps["normalise"] = normalise(declaration, directory, dsn)
    steps["stage"] = stage(declaration, directory, key, dsn, max_share)
    if do_apply and not steps["stage"]["needs_approval"]:
        steps["apply"] = apply(declaration, key, dsn)
    finish(key, dsn, directory, keep_files=False)
    return steps


def _statuts(dsn: str, source: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.statut, count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
            "WHERE s.code = %s GROUP BY a.statut",
            (source,),
        ).fetchall()
    return dict(rows)


def test_guard_threshold():
    assert not needs_approval(0, 0, 0.1)  # first load
    assert not needs_approval(5, 0, 0.1)
    assert not needs_approval(1, 10, 0.1)  # exactly at the threshold: applies
    assert needs_approval(2, 10, 0.1)
    assert needs_approval(1, 1, 0.5)


def test_paths_are_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("QFDMO_DATA_DIR", str(tmp_path))
    run_id = "manual__2026-11-25T16:40:00.123+00:00"
    assert run_dir("source_x", run_id).parent == tmp_path / "runs" / "source_x"
    assert "/" not in run_dir("source_x", run_id).name and ":" not in run_dir("source_x", run_id).name
    assert report_path("source_x", run_id).suffix == ".json"


def test_refashion_load_rerun_and_truncation(feed_server, carte_dsn, tmp_path):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")

    first = _run(declaration, url, carte_dsn, tmp_path, "first")
    assert first["download"]["pages"] == 4
    normalised = first["normalise"]
    assert normalised["rows_read"] == 16 and normalised["rows_rejected"] == 3
    assert sum(normalised["rejections"].values()) >= 3
    assert first["stage"]["diff"]["new"] == 12 and not first["stage"]["needs_approval"]
    assert first["apply"]["total_rows_written"] > 0
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 12}

    again = _run(declaration, url, carte_dsn, tmp_path, "again")
    assert again["stage"]["diff"]["unchanged"] == 12
    assert again["apply"]["total_rows_written"] == 0

    # Half the feed disappears: the guard asks for approval and nothing is written meanwhile.
    feed_server.set_dataset("donnees-eo-refashion", fixture_rows("refashion.json")[6:])
    truncated = _run(declaration, url, carte_dsn, tmp_path, "truncated")
    assert truncated["stage"]["needs_approval"] and "apply" not in truncated
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 12}
    # With a looser threshold the same feed applies on its own.
    loose = _run(declaration, url, carte_dsn, tmp_path, "loose", max_share=0.9)
    assert loose["apply"]["diff"]["to_deactivate"] == 5  # rows 1-6 left, but row 1 is repeated later
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 7, "SUPPRIME": 5}
    with psycopg.connect(carte_dsn) as conn:
        staging = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'"
        ).fetchone()[0]
    assert staging == 0


def test_every_row_rejected_stops_the_run(feed_server, carte_dsn, tmp_path):  # noqa: F811
    declaration = load_declarations()["refashion"]
    feed_server.set_dataset("donnees-eo-refashion", [{"nom_de_lorganisme": "Sans rien"}])
    directory = tmp_path / "bad"
    download(declaration, feed_server.datafair_url("donnees-eo-refashion"), directory)
    with pytest.raises(PipelineError, match="all 1 rows of the feed were rejected"):
        normalise(declaration, directory, carte_dsn)


def test_report_outcomes_and_rendering(tmp_path):
    steps = {
        "download": {"url": "http://x/lines", "pages": 1, "total": 3, "requests": 1, "retries": 0, "seconds": 0.1},
        "normalise": {
            "rows_read": 3,
            "rows_rejected": 1,
            "rejections": {"no sous-categorie": 1},
            "rejection_examples": {"no sous-categorie": [{"row": 2, "identifier": "X", "value": ""}]},
            "unknown_values": {"product": {"objets mystères": 1}},
            "warnings": {},
            "seconds": 0.2,
        },
        "stage": {
            "acteurs": 2,
            "duplicates_merged": 0,
            "diff": {"new": 0, "changed": 0, "unchanged": 2, "to_deactivate": 8, "active_before": 10,
                     "deactivation_share": 0.8, "inactive": 0, "examples": {"to_deactivate": ["refashion_A"]}},
            "max_deactivation_share": 0.1,
            "needs_approval": True,
            "seconds_total": 0.3,
        },
        "apply": None,
    }
    timed_out = build_report(dag_id="source_x", run_id="r1", source="x", steps=steps,
                             approval=Approval("Reject", None, timed_out=True), approval_timeout=5)
    assert timed_out["outcome"] == TIMED_OUT and not timed_out["applied"]
    rejected = build_report(dag_id="source_x", run_id="r1", source="x", steps=steps,
                            approval=Approval.from_xcom({"chosen_options": ["Reject"],
                                                         "responded_by_user": {"id": "1", "name": "airflow"}}))
    assert rejected["outcome"] == REJECTED
    assert {REJECTED, TIMED_OUT} <= set(SETTLED_OUTCOMES)
    text = to_text(timed_out)
    assert "NOT APPLIED: TIMED OUT" in text and "no sous-categorie" in text and "objets mystères" in text
    assert "8 of 10 ACTIF acteurs" in to_markdown(timed_out)
    path = write_report(timed_out, tmp_path / "reports" / "r1.json")
    assert json.loads(path.read_text())["counts"]["to_deactivate"] == 8
    failed = build_report(dag_id="source_x", run_id="r1", source="x", steps={"download": None}, failed_step="download")
    assert failed["outcome"] == "not applied: failed at download"


FORMATS = {
    # code: (dataset, fixture, name column, url builder, owned source codes)
    "ocab": ("donnees-eo-ocab", "ocab.json", "nom_de_lorganisme",
             lambda s: s.datafair_url("donnees-eo-ocab", size="3")),
    "cma_reparacteur": ("reparacteurs", "cma_reparacteur.json", "name", lambda s: s.explore_url("reparacteurs")),
    "ademesinoedecheteries": ("sinoe-(r)-annuaire-des-decheteries-dma", "sinoe_decheteries.json", "N_SERVICE",
                              lambda s: s.datafair_url("sinoe-(r)-annuaire-des-decheteries-dma", size="4",
                                                       q_mode="simple", ANNEE_eq="2024")),
}


@pytest.mark.parametrize("code", sorted(FORMATS))
def test_each_format_load_rerun_change_truncate_with_revision(feed_server, carte_dsn, tmp_path, code):  # noqa: F811
    dataset, fixture, name_column, make_url, = FORMATS[code]
    declaration = load_declarations()[code]
    url = make_url(feed_server)
    first = _run(declaration, url, carte_dsn, tmp_path, "first")
    new = first["stage"]["diff"]["new"]
    assert new > 0 and first["normalise"]["rows_rejected"] > 0 and first["apply"]["total_rows_written"] > 0
    with psycopg.connect(carte_dsn) as conn:
        revised = conn.execute("SELECT min(identifiant_unique) FROM qfdmo_acteur").fetchone()[0]
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise)"
            " VALUES (%s, 'Corrigé', '', '')",
            (revised,),
        )
        revision = conn.execute("SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r").fetchall()

    again = _run(declaration, url, carte_dsn, tmp_path, "again")
    assert again["stage"]["diff"]["unchanged"] == new and again["apply"]["total_rows_written"] == 0

    rows = fixture_rows(fixture)
    rows[0][name_column] = f"{rows[0][name_column]} (nouveau nom)"
    feed_server.set_dataset(dataset, rows)
    changed = _run(declaration, url, carte_dsn, tmp_path, "changed")
    assert changed["apply"]["diff"]["changed"] >= 1 and changed["apply"]["diff"]["new"] == 0

    feed_server.set_dataset(dataset, rows[: len(rows) // 3])
    truncated = _run(declaration, url, carte_dsn, tmp_path, "truncated")
    assert truncated["stage"]["needs_approval"] and "apply" not in truncated
    with psycopg.connect(carte_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM qfdmo_acteur WHERE statut <> 'ACTIF'").fetchone()[0] == 0
        assert conn.execute("SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r").fetchall() == revision


# --- unchanged-input fast path ---


def _run_dag_like(declaration, url, dsn, tmp_path, name):
    """The steps wired as the DAG wires them (download's result to normalise, and so on)."""
    directory = tmp_path / name
    key = f"test_{name}"
    steps = {"download": download(declaration, url, directory)}
    steps["normalise"] = normalise(declaration, directory, dsn, steps["download"])
    steps["stage"] = stage(declaration, directory, key, dsn, 0.1, steps["normalise"])
    steps["apply"] = apply(declaration, key, dsn, directory, steps["stage"])
    finish(key, dsn, directory, keep_files=False)
    return steps


def test_unchanged_feed_skips_normalise_stage_apply(feed_server, carte_dsn, tmp_path):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")

    first = _run_dag_like(declaration, url, carte_dsn, tmp_path, "first")
    assert not first["normalise"].get("skipped") and first["apply"]["total_rows_written"] > 0

    # Same feed (the `next` cursors may differ: not row content), acteurs untouched: skipped.
    again = _run_dag_like(declaration, url, carte_dsn, tmp_path, "again")
    assert again["normalise"]["skipped"] and again["stage"]["skipped"] and again["apply"]["skipped"]
    assert again["apply"]["total_rows_written"] == 0 and not again["stage"]["needs_approval"]
    assert again["normalise"]["rows_read"] == 16 and again["normalise"]["rows_rejected"] == 3
    assert again["stage"]["diff"]["unchanged"] == 12 and again["stage"]["diff"]["active_before"] == 12
    report = build_report(dag_id="source_refashion", run_id="r", source="refashion", steps=again)
    assert report["skipped"]["reason"] == "unchanged feed: nothing to do"
    assert report["counts"]["rows_read"] == 16 and report["counts"]["rows_written"] == 0
    assert report["counts"]["unchanged"] == 12
    assert "unchanged feed: nothing to do" in to_text(report)

    # Another endpoint URL (same rows) is another input: full path, nothing to write.
    other_url = feed_server.datafair_url("donnees-eo-refashion", size="5", select="*")
    other = _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "other_url")
    assert not other["normalise"].get("skipped") and other["stage"]["diff"]["unchanged"] == 12
    assert _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "other_again")["normalise"]["skipped"]

    # The DB witness changed (someone touched an acteur of the source): full path.
    with psycopg.connect(carte_dsn) as conn:
        conn.execute(
            "UPDATE qfdmo_acteur SET modifie_le = modifie_le + interval '1 second' WHERE identifiant_unique = "
            "(SELECT min(a.identifiant_unique) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
            " WHERE s.code = 'refashion')"
        )
    touched = _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "touched")
    assert not touched["normalise"].get("skipped") and touched["stage"]["diff"]["unchanged"] == 12
    assert _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "touched_again")["normalise"]["skipped"]

    # No record (first run of the fast path, table dropped): full path, then recorded again.
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("DELETE FROM qfdmo_platform.applied_feed")
    missing = _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "missing")
    assert not missing["normalise"].get("skipped") and missing["apply"]["total_rows_written"] == 0
    assert _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "missing_again")["normalise"]["skipped"]

    # The feed changed: full path, and the change is applied.
    rows = fixture_rows("refashion.json")
    rows[4]["nom_de_lorganisme"] = "Relais Textile Exempleville Centre"
    feed_server.set_dataset("donnees-eo-refashion", rows)
    changed = _run_dag_like(declaration, other_url, carte_dsn, tmp_path, "changed")
    assert not changed["normalise"].get("skipped")
    assert changed["stage"]["diff"]["changed"] == 1 and changed["apply"]["total_rows_written"] > 0


def test_rejected_or_unapplied_run_records_nothing(feed_server, carte_dsn, tmp_path):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")
    directory = tmp_path / "staged_only"
    downloaded = download(declaration, url, directory)
    normalised = normalise(declaration, directory, carte_dsn, downloaded)
    stage(declaration, directory, "test_staged_only", carte_dsn, 0.1, normalised)
    finish("test_staged_only", carte_dsn, directory, keep_files=False)  # never applied
    again = _run_dag_like(declaration, url, carte_dsn, tmp_path, "again")
    assert not again["normalise"].get("skipped") and again["apply"]["total_rows_written"] > 0
