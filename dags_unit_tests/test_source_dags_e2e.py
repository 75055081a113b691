"""Source DAGs end to end: the real Airflow CLI (`bin/airflow dags test`) and the running scheduler of
the test stack, against the fake portals and the stack's carte DB.

What is proved here, and only here: the task graph as Airflow runs it (the fast-path short-circuit,
the approval, the teardown, the asset event), and each format once through a DAG. The scenarios
that do not depend on Airflow (unchanged re-run, changed feed, truncated feed, revision kept, for
every format) run on the plain steps in test_pipeline_steps.py, seconds each; through a DAG, the
changed feed once (refashion). The other formats run side by side through the scheduler (several
DAGs at once) rather than one `dags test` after another.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fakes import fixture_rows, serve_fixtures
from fakes.feed_server import FeedServer
from stack_runs import answer_approval, api, finished, set_paused, task_state, trigger

from devstack.config import RUNS_BUCKET
from devstack.processes import wait_until


@pytest.fixture(scope="module")
def portals() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def feeds(portals: FeedServer) -> FeedServer:
    return serve_fixtures(portals)


def _s3_keys(stack, prefix: str) -> dict[str, object]:
    """Key -> last modified of the run-data bucket's objects under `prefix`."""
    answer = stack.stack.s3.client().list_objects_v2(Bucket=RUNS_BUCKET, Prefix=prefix)
    return {item["Key"]: item["LastModified"] for item in answer.get("Contents", [])}


def dags_test(stack, dag_id: str, conf: dict, env: dict[str, str] | None = None) -> dict:
    """`bin/airflow dags test DAG -c CONF`; returns the run report the DAG wrote (to S3)."""
    folder = f"reports/{dag_id}/"
    before = set(_s3_keys(stack, folder))
    result = stack.airflow("dags", "test", dag_id, "-c", json.dumps(conf), env=env, timeout=900)
    after = _s3_keys(stack, folder)
    created = sorted((key for key in after if key not in before), key=lambda key: str(after[key]))
    assert created, f"no run report written\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    body = stack.stack.s3.client().get_object(Bucket=RUNS_BUCKET, Key=created[-1])["Body"].read()
    report = json.loads(body)
    report["_output"] = result.stdout + result.stderr
    return report


# The acteurs a source's feed made (identifiant_unique = <source code>_<partner id>): other tests of
# the shared stack add acteurs of their own under the same sources.
FROM_FEED = "starts_with(a.identifiant_unique, s.code || '_')"


def _acteurs(dsn: str, source_codes: tuple[str, ...]) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.identifiant_unique, a.statut FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
            f"WHERE s.code = ANY(%s) AND {FROM_FEED}",
            (list(source_codes),),
        ).fetchall()
    return dict(rows)


def _snapshot(dsn: str, source_codes: tuple[str, ...]) -> list[tuple]:
    """Every written column of the sources' acteurs and their M2M rows, to prove 'nothing changed'."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT row_to_json(a)::text, "
            " (SELECT count(*) FROM qfdmo_propositionservice ps WHERE ps.acteur_id = a.identifiant_unique) "
            "FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id WHERE s.code = ANY(%s) "
            "ORDER BY a.identifiant_unique",
            (list(source_codes),),
        ).fetchall()


REVISION = "SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r WHERE identifiant_unique = %s"


def _revise(dsn: str, identifiant_unique: str) -> str:
    """A human corrects one acteur in the webapp; returns the revision row as written."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise)"
            " VALUES (%s, 'Nom corrigé par l''équipe', '', '')",
            (identifiant_unique,),
        )
        return conn.execute(REVISION, (identifiant_unique,)).fetchone()[0]


def _revision(dsn: str, identifiant_unique: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute(REVISION, (identifiant_unique,)).fetchone()[0]


def _carte_events(stack, dag_id: str, run_id: str) -> list[dict]:
    """The CARTE_ACTEURS asset events a run emitted (read back through the REST API)."""
    from qfdmo.airflow.assets import CARTE_ACTEURS

    query = urllib.parse.urlencode({"source_dag_id": dag_id, "source_run_id": run_id})
    events = api(stack, "GET", f"/assets/events?{query}")["asset_events"]
    return [event for event in events if event["name"] == CARTE_ACTEURS.name]


def _run_objects(stack, dag_id: str, run_id: str) -> list[str]:
    """The run's data left in the run-data bucket (its feed, its normalised rows if it failed)."""
    from qfdmo.pipeline.paths import safe_name

    return sorted(_s3_keys(stack, f"runs/{safe_name(dag_id)}/{safe_name(run_id)}/"))


def _kept(dsn: str, dag_id: str, run_id: str) -> list[str]:
    """Outcomes recorded for a failed run whose data is kept (qfdmo_platform.kept_run)."""
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(
            "SELECT outcome FROM qfdmo_platform.kept_run WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))]


def test_refashion_first_load_unchanged_rerun_change_and_revision(airflow_stack, feeds):
    dsn = airflow_stack.carte_dsn
    dag_id = "source_refashion"
    url = feeds.datafair_url("donnees-eo-refashion", size="5")
    conf = {"endpoint_url": url}

    # Three pages normalised by two worker processes started by the task.
    first = dags_test(airflow_stack, dag_id, conf, env={"QFDMO_NORMALISE_PROCESSES": "2"})
    assert first["outcome"] == "applied", first["_output"][-3000:]
    assert first["normalise_processes"] == 2
    assert first["counts"]["new"] == 12 and first["counts"]["rejected"] == 3
    example_rows = [e["row"] for examples in first["rejection_examples"].values() for e in examples]
    rows_read = first["counts"]["rows_read"]
    assert example_rows and all(1 <= row <= rows_read for row in example_rows)  # the feed's own row numbers
    assert sum(first["rejections"].values()) == 3 and first["rejection_examples"]
    assert "objets mystères" in json.dumps(first["unknown_values"], ensure_ascii=False).lower()
    assert set(first["seconds"]) == {"download", "check_feed", "normalise", "stage", "apply"}
    assert "OUTCOME: APPLIED" in first["_output"]
    acteurs = _acteurs(dsn, ("refashion",))
    assert len(acteurs) == 12 and set(acteurs.values()) == {"ACTIF"}
    assert any(key.endswith("_d") for key in acteurs)  # the online-only acteur
    _radius_search_is_in_metres(dsn)
    # The run wrote rows: the carte's acteurs changed, announced to whatever derives from them.
    [event] = _carte_events(airflow_stack, dag_id, first["run_id"])
    assert event["source_task_id"] == "announce_change"
    assert event["extra"]["source"] == "refashion" and event["extra"]["new"] == 12

    # A human corrected one acteur: the revision must survive every run untouched.
    revised = sorted(acteurs)[0]
    revision = _revise(dsn, revised)

    # The same feed again, now through the scheduler (the CLI path is proved; a `dags test` costs ~8 s
    # more, its in-process API): the short-circuit skips normalise..apply, the report says so, no event.
    again = _scheduled(airflow_stack, dag_id, conf)
    assert again["outcome"] == "unchanged", again
    assert again["skipped"]["steps"] == ["normalise", "stage", "guard", "apply"]
    assert again["counts"]["unchanged"] == 12 and again["counts"]["rows_written"] == 0
    assert set(again["seconds"]) == {"download", "check_feed"}
    for task_id in ("normalise", "stage_and_diff", "guard", "apply", "announce_change"):
        assert task_state(airflow_stack, dag_id, again["run_id"], task_id) == "skipped", task_id
    assert _carte_events(airflow_stack, dag_id, again["run_id"]) == []

    # Changed feed: one name corrected by the partner, one point gone (1/12 < 10%: no approval).
    rows = fixture_rows("refashion.json")
    rows[4]["nom_de_lorganisme"] = "Relais Textile Exempleville Centre"
    gone = rows.pop(5)
    feeds.set_dataset("donnees-eo-refashion", rows)
    changed = _scheduled(airflow_stack, dag_id, conf)
    assert changed["outcome"] == "applied"
    assert changed["counts"]["changed"] == 1 and changed["counts"]["deactivated"] == 1
    assert changed["guard"]["needs_approval"] is False
    statuts = _acteurs(dsn, ("refashion",))
    assert list(statuts.values()).count("SUPPRIME") == 1
    assert any(gone["id_point_apport_ou_reparation"] in key for key, s in statuts.items() if s == "SUPPRIME")
    [event] = _carte_events(airflow_stack, dag_id, changed["run_id"])
    assert event["extra"]["changed"] == 1 and event["extra"]["deactivated"] == 1

    assert _revision(dsn, revised) == revision
    with psycopg.connect(dsn) as conn:
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'").fetchone()[0]
    assert staging == 0
    # The cleanup teardown removed the data of every settled run (applied, unchanged).
    for report in (first, again, changed):
        assert _run_objects(airflow_stack, dag_id, report["run_id"]) == []
    assert "Run report written to s3://" in first["_output"]
    set_paused(airflow_stack, dag_id, True)


def _radius_search_is_in_metres(dsn: str) -> None:
    """The carte's radius search on what the DAG wrote: ST_DWithin on geography, in metres, finds
    what a great-circle distance computed here finds (the feed's points lie within 3 km of Grenoble)."""
    with psycopg.connect(dsn) as conn:
        points = conn.execute(
            "SELECT identifiant_unique, ST_Y(location::geometry), ST_X(location::geometry) FROM qfdmo_acteur a"
            f" JOIN qfdmo_source s ON s.id = a.source_id WHERE s.code = 'refashion' AND {FROM_FEED}"
            " AND location IS NOT NULL"
        ).fetchall()
        center_lat, center_lon = 45.181, 5.721

        def within(metres: int, lat: float = center_lat, lon: float = center_lon) -> set[str]:
            rows = conn.execute(
                "SELECT identifiant_unique FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
                f" WHERE s.code = 'refashion' AND {FROM_FEED}"
                " AND ST_DWithin(location, ST_MakePoint(%s, %s)::geography, %s)",
                (lon, lat, metres),
            ).fetchall()
            return {name for (name,) in rows}

        def haversine(lat: float, lon: float) -> float:
            p1, p2 = math.radians(center_lat), math.radians(lat)
            dp, dl = p2 - p1, math.radians(lon - center_lon)
            a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
            return 2 * 6_371_000 * math.asin(math.sqrt(a))

        assert within(10_000) == {name for name, _, _ in points}
        assert within(10_000, lat=48.8566, lon=2.3522) == set()  # Paris: 480 km away
        near = {name for name, lat, lon in points if haversine(lat, lon) < 1_000}
        assert 0 < len(near) < len(points) and within(1_000) == near


# --- through the stack's scheduler (under `dags test` a HITL task waits forever) ---


def _report(stack, dag_id: str, run_id: str) -> dict:
    from qfdmo.pipeline.paths import safe_name

    key = f"reports/{safe_name(dag_id)}/{safe_name(run_id)}.json"
    return json.loads(stack.stack.s3.client().get_object(Bucket=RUNS_BUCKET, Key=key)["Body"].read())


def _scheduled(stack, dag_id: str, conf: dict) -> dict:
    """One run through the scheduler, to its end; returns its report."""
    run_id = trigger(stack, dag_id, conf)
    assert finished(stack, dag_id, run_id) == "success", (dag_id, run_id)
    return _report(stack, dag_id, run_id)


def _run_all(stack, confs: dict[str, dict]) -> dict[str, tuple[str, str]]:
    """One run of each DAG, triggered at once (the scheduler runs them side by side); waits for
    all and returns each DAG's (run id, final state)."""
    run_ids = {dag_id: trigger(stack, dag_id, conf) for dag_id, conf in confs.items()}
    runs = {dag_id: (run_id, finished(stack, dag_id, run_id)) for dag_id, run_id in run_ids.items()}
    for dag_id in run_ids:
        set_paused(stack, dag_id, True)
    return runs


def _load_directly(dsn: str, code: str, url: str, work: Path) -> None:
    """Apply a feed with the plain steps: a test's starting state, without an Airflow round trip.
    No fingerprint is recorded, so the next DAG run takes the full path."""
    from qfdmo.pipeline import LocalRunData, apply, download, finish, normalise, stage
    from qfdmo.sources import load_declarations

    declaration = load_declarations()[code]
    data = LocalRunData(work)
    download(declaration, url, data)
    normalise(declaration, data, "e2e_setup", dsn, scratch_base=work)
    stage(declaration, "e2e_setup", dsn, 1.0)
    apply(declaration, "e2e_setup", dsn)
    finish("e2e_setup", dsn, data, settled=True)


def test_large_deactivation_waits_for_a_human(airflow_stack, feeds, tmp_path):
    """Half of refashion's points vanish: a timed-out run applies nothing; an approved one applies."""
    dag_id = "source_refashion"
    dsn = airflow_stack.carte_dsn
    url = feeds.datafair_url("donnees-eo-refashion", size="5")
    _load_directly(dsn, "refashion", url, tmp_path / "setup")  # start from the full feed
    before = _snapshot(dsn, ("refashion",))
    feeds.set_dataset("donnees-eo-refashion", fixture_rows("refashion.json")[6:])

    # 1. Nobody answers within approval_timeout: the default (Reject) applies nothing.
    # Not less than 5 s: with 1 s the run failed once, most likely the Airflow 3.3 race that
    # answer_approval waits out (a timeout fired before the scheduler consumed the pausing event).
    timed_out = trigger(airflow_stack, dag_id, {"endpoint_url": url, "approval_timeout": 5})
    assert finished(airflow_stack, dag_id, timed_out) == "success"
    report = _report(airflow_stack, dag_id, timed_out)
    assert report["outcome"] == "not applied: timed out" and report["guard"]["needs_approval"]
    for task_id, state in (("apply", "skipped"), ("announce_change", "skipped"), ("cleanup", "success")):
        assert task_state(airflow_stack, dag_id, timed_out, task_id) == state, task_id
    assert _snapshot(dsn, ("refashion",)) == before
    assert _carte_events(airflow_stack, dag_id, timed_out) == []
    assert _run_objects(airflow_stack, dag_id, timed_out) == []  # settled: data removed

    # 2. A human approves through the HITL API (a Reject through the same operator is proved for
    # compute_acteurs and export_opendata in test_carte_guards_e2e.py: it applies nothing, as above).
    run_id = trigger(airflow_stack, dag_id, {"endpoint_url": url, "approval_timeout": 600})
    form = answer_approval(airflow_stack, dag_id, run_id, "Approve")
    assert "would be set **SUPPRIME**" in form["body"]
    assert finished(airflow_stack, dag_id, run_id) == "success"
    report = _report(airflow_stack, dag_id, run_id)
    assert report["outcome"] == "applied" and report["guard"]["approval"]["responded_by"]
    [event] = _carte_events(airflow_stack, dag_id, run_id)
    assert event["extra"]["deactivated"] == 5
    statuts = _acteurs(dsn, ("refashion",))
    assert list(statuts.values()).count("SUPPRIME") == 5
    set_paused(airflow_stack, dag_id, True)


# --- the other formats: a first load and a changed feed, their DAGs side by side ---

FORMATS = {
    # dag_id: (dataset, url kind, name column, owned source codes, new acteurs, rejected rows)
    "source_ocab": ("donnees-eo-ocab", "datafair", "nom_de_lorganisme",
                    ("ocab_valobat", "ocab_ecomaison", "ocab_valdelia", "ocab_ecominero"), 9, 1),
    "source_cma_reparacteur": ("reparacteurs", "explore", "name", ("cma_reparacteur",), 227, 3),
    "source_ademesinoedecheteries": ("sinoe-(r)-annuaire-des-decheteries-dma", "sinoe", "N_SERVICE",
                                     ("ademesinoedecheteries",), 7, 2),
}


def _url(feeds: FeedServer, dataset: str, kind: str) -> str:
    if kind == "explore":
        return feeds.explore_url(dataset)
    if kind == "sinoe":
        return feeds.datafair_url(dataset, size="4", q_mode="simple", ANNEE_eq="2024")
    return feeds.datafair_url(dataset, size="3")


def _carte_recomputed_by_the_asset(stack, dsn: str) -> None:
    """compute_acteurs runs on the asset events alone (no one triggers it; events that arrive during
    a run lead to one next run) until the acteurs the source runs applied are on the carte."""
    applied = set(_acteurs(dsn, ("cma_reparacteur",)))

    def settled() -> set[str] | None:
        runs = api(stack, "GET", "/dags/compute_acteurs/dagRuns?run_type=asset_triggered")["dag_runs"]
        assert "failed" not in {run["state"] for run in runs}, runs
        if not runs or any(run["state"] in ("queued", "running") for run in runs):
            return None
        with psycopg.connect(dsn) as conn:
            displayed = {r[0] for r in conn.execute(
                "SELECT identifiant_unique FROM qfdmo_displayedacteur WHERE source_id ="
                " (SELECT id FROM qfdmo_source WHERE code = 'cma_reparacteur')")}
        return displayed or None

    displayed = wait_until(settled, "compute_acteurs to put the applied acteurs on the carte", 600, interval=0.5)
    set_paused(stack, "compute_acteurs", True)
    assert displayed <= applied, sorted(displayed - applied)[:5]


def test_other_formats_and_a_failed_run_through_the_scheduler(airflow_stack, feeds):
    dsn = airflow_stack.carte_dsn
    confs = {dag_id: {"endpoint_url": _url(feeds, spec[0], spec[1])} for dag_id, spec in FORMATS.items()}
    # Beside them, a source whose portal returns nothing: its run fails and leaves the carte as it was.
    failing = "source_aliapur"
    feeds.set_dataset("donnees-eo-aliapur", [])
    before = _snapshot(dsn, ("aliapur",))

    # compute_acteurs listens to the asset the source runs emit: it must start by itself.
    set_paused(airflow_stack, "compute_acteurs", False)
    first = _run_all(airflow_stack, {**confs, failing: {"endpoint_url": feeds.datafair_url("donnees-eo-aliapur")}})
    for dag_id, (_, _, _, source_codes, expected_new, expected_rejected) in FORMATS.items():
        run_id, state = first[dag_id]
        report = _report(airflow_stack, dag_id, run_id)
        assert state == "success" and report["outcome"] == "applied", (dag_id, report)
        assert report["counts"]["new"] == expected_new, (dag_id, report["counts"])
        assert report["counts"]["rejected"] == expected_rejected, (dag_id, report["rejections"])
        assert len(_acteurs(dsn, source_codes)) == expected_new
        [event] = _carte_events(airflow_stack, dag_id, run_id)
        assert event["extra"]["new"] == expected_new

    _carte_recomputed_by_the_asset(airflow_stack, dsn)

    # The failed step fails the run by itself (the report only reports); the teardown still ran,
    # and recorded the failed run's data as kept for diagnosis (an empty feed left no object); no event.
    run_id, state = first[failing]
    report = _report(airflow_stack, failing, run_id)
    assert state == "failed" and report["outcome"] == "not applied: failed at download", report
    for task_id, expected in (("download", "failed"), ("check_feed", "upstream_failed"),
                              ("announce_change", "upstream_failed"), ("report", "success"),
                              ("cleanup", "success")):
        assert task_state(airflow_stack, failing, run_id, task_id) == expected, task_id
    assert _snapshot(dsn, ("aliapur",)) == before
    assert _carte_events(airflow_stack, failing, run_id) == []
    assert _kept(dsn, failing, run_id) == ["not applied: failed at download"]

