"""qfdmo.pipeline's steps without Airflow: fake portal -> run data in S3 (moto) and staging -> a real
carte database."""

from __future__ import annotations

import itertools
import json

import psycopg
import pytest
from fakes import feed_server, fixture_rows  # noqa: F401 - pytest fixture
from qfdmo.pipeline import (
    REJECTED,
    SETTLED_OUTCOMES,
    TIMED_OUT,
    UNCHANGED,
    Applied,
    Approval,
    Downloaded,
    FeedCheck,
    Normalised,
    PipelineError,
    RunResults,
    S3RunStore,
    Staged,
    apply,
    build_report,
    check_feed,
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

from devstack.config import RUNS_BUCKET

_stores = itertools.count()


@pytest.fixture
def store(s3_server, tmp_path, monkeypatch) -> S3RunStore:
    """The run-data bucket of the local S3, under a prefix of this test's own."""
    monkeypatch.setenv("QFDMO_DATA_DIR", str(tmp_path / "data"))  # the tasks' scratch
    return S3RunStore(s3_server.client(), RUNS_BUCKET, f"test-steps-{next(_stores)}/")


def _keys(store: S3RunStore) -> list[str]:
    answer = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return sorted(item["Key"][len(store.prefix):] for item in answer.get("Contents", []))


def _run(declaration, url, dsn, store, name, max_share=0.1) -> RunResults:
    """The full path (no fast-path decision): download, normalise, stage, apply unless the guard says no."""
    data = store.run(f"source_{declaration.code}", name)
    key = f"test_{name}"
    downloaded = download(declaration, url, data)
    normalised = normalise(declaration, data, key, dsn)
    staged = stage(declaration, key, dsn, max_share)
    applied = None if staged.needs_approval else apply(declaration, key, dsn)
    finish(key, dsn, data, settled=True)
    return RunResults(downloaded=downloaded, normalised=normalised, staged=staged, applied=applied)


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


def test_refashion_load_rerun_and_truncation(feed_server, carte_dsn, store):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")

    first = _run(declaration, url, carte_dsn, store, "first")
    assert first.downloaded and first.downloaded.pages == 4
    normalised = first.normalised
    assert normalised and normalised.rows_read == 16 and normalised.rows_rejected == 3
    assert sum(normalised.rejections.values()) >= 3
    assert first.staged and first.staged.diff.new == 12 and not first.staged.needs_approval
    assert first.applied and first.applied.wrote_rows
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 12}

    again = _run(declaration, url, carte_dsn, store, "again")
    assert again.staged and again.staged.diff.unchanged == 12
    assert again.applied and again.applied.total_rows_written == 0 and not again.applied.wrote_rows

    # Half the feed disappears: the guard asks for approval and nothing is written meanwhile.
    feed_server.set_dataset("donnees-eo-refashion", fixture_rows("refashion.json")[6:])
    truncated = _run(declaration, url, carte_dsn, store, "truncated")
    assert truncated.staged and truncated.staged.needs_approval and truncated.applied is None
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 12}
    # With a looser threshold the same feed applies on its own.
    loose = _run(declaration, url, carte_dsn, store, "loose", max_share=0.9)
    assert loose.applied and loose.applied.diff.to_deactivate == 5  # rows 1-6 left, but row 1 is repeated later
    assert _statuts(carte_dsn, "refashion") == {"ACTIF": 7, "SUPPRIME": 5}
    with psycopg.connect(carte_dsn) as conn:
        staging = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'"
        ).fetchone()[0]
    assert staging == 0


def test_every_row_rejected_stops_the_run(feed_server, carte_dsn, store):  # noqa: F811
    declaration = load_declarations()["refashion"]
    feed_server.set_dataset("donnees-eo-refashion", [{"nom_de_lorganisme": "Sans rien"}])
    data = store.run("source_refashion", "bad")
    download(declaration, feed_server.datafair_url("donnees-eo-refashion"), data)
    with pytest.raises(PipelineError, match="all 1 rows of the feed were rejected"):
        normalise(declaration, data, "test_bad", carte_dsn)


def test_report_outcomes_and_rendering(tmp_path):
    run = RunResults(
        downloaded=Downloaded(url="http://x/lines", feed_sha256="f", pages=1, total=3, bytes=10, requests=1,
                              retries=0, seconds=0.1),
        checked=FeedCheck(fingerprint="f", unchanged=False, reason="new input: full path", seconds=0.01),
        normalised=Normalised(
            rows_read=3,
            rows_rejected=1,
            acteurs_written=2,
            rejections={"no sous-categorie": 1},
            rejection_examples={"no sous-categorie": [{"row": 2, "identifier": "X", "value": ""}]},
            unknown_values={"product": {"objets mystères": 1}},
            seconds=0.2,
        ),
        staged=Staged.from_dict({
            "run_key": "k",
            "rows": {"acteurs": 3},
            "acteurs": 2,
            "duplicates_merged": 0,
            "diff": {"new": 0, "changed": 0, "unchanged": 2, "to_deactivate": 8, "active_before": 10,
                     "deactivation_share": 0.8, "inactive": 0, "examples": {"to_deactivate": ["refashion_A"]}},
            "seconds": {},
            "max_deactivation_share": 0.1,
            "needs_approval": True,
            "seconds_total": 0.3,
        }),
    )
    # What travels through XCom reads back as the same typed result.
    assert Staged.from_dict(json.loads(json.dumps(run.staged.to_dict()))) == run.staged
    with pytest.raises(ValueError, match="needs_approval"):
        Staged.from_dict({k: v for k, v in run.staged.to_dict().items() if k != "needs_approval"})
    timed_out = build_report(dag_id="source_x", run_id="r1", source="x", results=run,
                             approval=Approval("Reject", None, timed_out=True), approval_timeout=5)
    assert timed_out["outcome"] == TIMED_OUT and not timed_out["applied"]
    rejected = build_report(dag_id="source_x", run_id="r1", source="x", results=run,
                            approval=Approval.from_xcom({"chosen_options": ["Reject"],
                                                         "responded_by_user": {"id": "1", "name": "airflow"}}))
    assert rejected["outcome"] == REJECTED
    assert {REJECTED, TIMED_OUT, UNCHANGED} <= set(SETTLED_OUTCOMES)
    text = to_text(timed_out)
    assert "NOT APPLIED: TIMED OUT" in text and "no sous-categorie" in text and "objets mystères" in text
    assert "8 of 10 ACTIF acteurs" in to_markdown(timed_out)
    path = write_report(timed_out, tmp_path / "reports" / "r1.json")
    assert json.loads(path.read_text())["counts"]["to_deactivate"] == 8
    failed = build_report(dag_id="source_x", run_id="r1", source="x", results=RunResults(), failed_step="download")
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
def test_each_format_load_rerun_change_truncate_with_revision(feed_server, carte_dsn, store, code):  # noqa: F811
    dataset, fixture, name_column, make_url, = FORMATS[code]
    declaration = load_declarations()[code]
    url = make_url(feed_server)
    first = _run(declaration, url, carte_dsn, store, "first")
    assert first.staged and first.normalised and first.applied
    new = first.staged.diff.new
    assert new > 0 and first.normalised.rows_rejected > 0 and first.applied.wrote_rows
    with psycopg.connect(carte_dsn) as conn:
        revised = conn.execute("SELECT min(identifiant_unique) FROM qfdmo_acteur").fetchone()[0]
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise)"
            " VALUES (%s, 'Corrigé', '', '')",
            (revised,),
        )
        revision = conn.execute("SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r").fetchall()

    again = _run(declaration, url, carte_dsn, store, "again")
    assert again.staged and again.staged.diff.unchanged == new and again.applied
    assert again.applied.total_rows_written == 0

    rows = fixture_rows(fixture)
    rows[0][name_column] = f"{rows[0][name_column]} (nouveau nom)"
    feed_server.set_dataset(dataset, rows)
    changed = _run(declaration, url, carte_dsn, store, "changed")
    assert changed.applied and changed.applied.diff.changed >= 1 and changed.applied.diff.new == 0

    feed_server.set_dataset(dataset, rows[: len(rows) // 3])
    truncated = _run(declaration, url, carte_dsn, store, "truncated")
    assert truncated.staged and truncated.staged.needs_approval and truncated.applied is None
    with psycopg.connect(carte_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM qfdmo_acteur WHERE statut <> 'ACTIF'").fetchone()[0] == 0
        assert conn.execute("SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r").fetchall() == revision
        total = conn.execute("SELECT count(*) FROM qfdmo_acteur").fetchone()[0]

    # Approved (here: a threshold that lets it through): the acteurs gone from the feed are set
    # SUPPRIME, never deleted, and the revision is still untouched.
    approved = _run(declaration, url, carte_dsn, store, "approved", max_share=1.0)
    assert approved.applied and approved.applied.diff.to_deactivate > 0
    with psycopg.connect(carte_dsn) as conn:
        suppressed = conn.execute("SELECT count(*) FROM qfdmo_acteur WHERE statut = 'SUPPRIME'").fetchone()[0]
        assert suppressed == approved.applied.diff.to_deactivate
        assert conn.execute("SELECT count(*) FROM qfdmo_acteur").fetchone()[0] == total
        assert conn.execute("SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r").fetchall() == revision


# --- unchanged-feed fast path ---


def _run_dag_like(declaration, url, dsn, store, name) -> RunResults:
    """The steps as the DAG wires them: the fast-path decision after the download; when it says
    unchanged, nothing else runs."""
    data = store.run(f"source_{declaration.code}", name)
    key = f"test_{name}"
    downloaded = download(declaration, url, data)
    checked = check_feed(declaration, data, dsn, downloaded)
    if checked.unchanged:
        finish(key, dsn, data, settled=True)
        return RunResults(downloaded=downloaded, checked=checked)
    normalised = normalise(declaration, data, key, dsn)
    staged = stage(declaration, key, dsn, 0.1)
    applied = apply(declaration, key, dsn, checked, normalised, staged)
    finish(key, dsn, data, settled=True)
    return RunResults(downloaded=downloaded, checked=checked, normalised=normalised, staged=staged,
                      applied=applied)


def test_unchanged_feed_skips_normalise_stage_apply(feed_server, carte_dsn, store):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")

    first = _run_dag_like(declaration, url, carte_dsn, store, "first")
    assert not first.unchanged and first.applied and first.applied.wrote_rows
    assert first.checked and first.checked.reason == "no applied run recorded: full path"

    # Same feed (the `next` cursors may differ: not row content), acteurs untouched: skipped.
    again = _run_dag_like(declaration, url, carte_dsn, store, "again")
    assert again.unchanged and again.normalised is None and again.staged is None and again.applied is None
    report = build_report(dag_id="source_refashion", run_id="r", source="refashion", results=again)
    assert report["outcome"] == UNCHANGED and not report["applied"]
    assert report["skipped"]["reason"] == "unchanged feed: nothing to do"
    assert report["skipped"]["steps"] == ["normalise", "stage", "guard", "apply"]
    assert report["counts"]["rows_read"] == 16 and report["counts"]["rejected"] == 3
    assert report["counts"]["rows_written"] == 0 and report["counts"]["unchanged"] == 12
    assert report["guard"]["active_before"] == 12 and report["guard"]["needs_approval"] is False
    assert "unchanged feed: nothing to do" in to_text(report)

    # Another endpoint URL (same rows) is another input: full path, nothing to write.
    other_url = feed_server.datafair_url("donnees-eo-refashion", size="5", select="*")
    other = _run_dag_like(declaration, other_url, carte_dsn, store, "other_url")
    assert not other.unchanged and other.staged and other.staged.diff.unchanged == 12
    assert other.checked and other.checked.reason == "new input: full path"
    assert _run_dag_like(declaration, other_url, carte_dsn, store, "other_again").unchanged

    # The DB witness changed (someone touched an acteur of the source): full path.
    with psycopg.connect(carte_dsn) as conn:
        conn.execute(
            "UPDATE qfdmo_acteur SET modifie_le = modifie_le + interval '1 second' WHERE identifiant_unique = "
            "(SELECT min(a.identifiant_unique) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
            " WHERE s.code = 'refashion')"
        )
    touched = _run_dag_like(declaration, other_url, carte_dsn, store, "touched")
    assert not touched.unchanged and touched.staged and touched.staged.diff.unchanged == 12
    assert _run_dag_like(declaration, other_url, carte_dsn, store, "touched_again").unchanged

    # No record (or one in an older shape): full path, then recorded again.
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("UPDATE qfdmo_platform.applied_feed SET summary = '{\"normalise\": {}}'")
    older = _run_dag_like(declaration, other_url, carte_dsn, store, "older")
    assert not older.unchanged and older.applied and older.applied.total_rows_written == 0
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("DELETE FROM qfdmo_platform.applied_feed")
    missing = _run_dag_like(declaration, other_url, carte_dsn, store, "missing")
    assert not missing.unchanged and missing.applied and missing.applied.total_rows_written == 0
    assert _run_dag_like(declaration, other_url, carte_dsn, store, "missing_again").unchanged

    # The feed changed: full path, and the change is applied.
    rows = fixture_rows("refashion.json")
    rows[4]["nom_de_lorganisme"] = "Relais Textile Exempleville Centre"
    feed_server.set_dataset("donnees-eo-refashion", rows)
    changed = _run_dag_like(declaration, other_url, carte_dsn, store, "changed")
    assert not changed.unchanged and changed.applied and changed.applied.wrote_rows
    assert changed.applied.diff.changed == 1


def test_rejected_or_unapplied_run_records_nothing(feed_server, carte_dsn, store):  # noqa: F811
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")
    data = store.run("source_refashion", "staged_only")
    downloaded = download(declaration, url, data)
    check_feed(declaration, data, carte_dsn, downloaded)
    normalise(declaration, data, "test_staged_only", carte_dsn)
    stage(declaration, "test_staged_only", carte_dsn, 0.1)
    finish("test_staged_only", carte_dsn, data, settled=True)  # never applied
    again = _run_dag_like(declaration, url, carte_dsn, store, "again")
    assert not again.unchanged and again.applied and again.applied.wrote_rows


def test_applied_result_says_whether_rows_were_written():
    diff = {"new": 0, "changed": 0, "unchanged": 1, "inactive": 0, "to_deactivate": 0, "active_before": 1,
            "deactivation_share": 0.0}
    nothing = Applied.from_dict({"diff": diff, "rows_written": {}, "total_rows_written": 0, "seconds": 0.1})
    assert not nothing.wrote_rows
    assert Applied.from_dict({**nothing.to_dict(), "total_rows_written": 3}).wrote_rows
