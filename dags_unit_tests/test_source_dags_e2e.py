"""Source DAGs end to end: the real Airflow CLI (`bin/airflow dags test`) and, for the approval
paths, the running scheduler of the test stack, against the fake portals and the stack's carte DB.

Scenarios run in sequence inside one test per format to keep the suite's time modest.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fakes import DATASETS, fixture_rows, serve_fixtures
from fakes.feed_server import FeedServer

from devstack.processes import wait_until


@pytest.fixture(scope="module")
def portals() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


@pytest.fixture
def feeds(portals: FeedServer) -> FeedServer:
    return serve_fixtures(portals)


def _reports(stack, dag_id: str) -> Path:
    return Path(stack.env["QFDMO_DATA_DIR"]) / "reports" / dag_id


def dags_test(stack, dag_id: str, conf: dict, env: dict[str, str] | None = None) -> dict:
    """`bin/airflow dags test DAG -c CONF`; returns the run report the DAG wrote."""
    folder = _reports(stack, dag_id)
    before = set(folder.glob("*.json")) if folder.exists() else set()
    result = stack.airflow("dags", "test", dag_id, "-c", json.dumps(conf), env=env, timeout=900)
    created = sorted(set(folder.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    assert created, f"no run report written\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    report = json.loads(created[-1].read_text())
    report["_output"] = result.stdout + result.stderr
    return report


def _acteurs(dsn: str, source_codes: tuple[str, ...]) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.identifiant_unique, a.statut FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id "
            "WHERE s.code = ANY(%s)",
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


def test_refashion_first_load_rerun_change_revision_and_guard(airflow_stack, feeds):
    dsn = airflow_stack.carte_dsn
    url = feeds.datafair_url("donnees-eo-refashion", size="5")
    conf = {"endpoint_url": url}

    # Three pages normalised by two worker processes forked from the task.
    first = dags_test(airflow_stack, "source_refashion", conf, env={"QFDMO_NORMALISE_PROCESSES": "2"})
    assert first["outcome"] == "applied", first["_output"][-3000:]
    assert first["normalise_processes"] == 2
    assert first["counts"]["new"] == 12 and first["counts"]["rejected"] == 3
    example_rows = [e["row"] for examples in first["rejection_examples"].values() for e in examples]
    rows_read = first["counts"]["rows_read"]
    assert example_rows and all(1 <= row <= rows_read for row in example_rows)  # the feed's own row numbers
    assert sum(first["rejections"].values()) == 3 and first["rejection_examples"]
    assert "objets mystères" in json.dumps(first["unknown_values"], ensure_ascii=False).lower()
    assert set(first["seconds"]) == {"download", "normalise", "stage", "apply"}
    assert "OUTCOME: APPLIED" in first["_output"]
    acteurs = _acteurs(dsn, ("refashion",))
    assert len(acteurs) == 12 and set(acteurs.values()) == {"ACTIF"}
    assert any(key.endswith("_d") for key in acteurs)  # the online-only acteur
    _radius_search_is_in_metres(dsn)

    # A human corrected one acteur: the revision must survive every run untouched.
    revised = sorted(acteurs)[0]
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise)"
            " VALUES (%s, 'Nom corrigé par l''équipe', '', '')",
            (revised,),
        )
        revision_before = conn.execute(
            "SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r WHERE identifiant_unique = %s", (revised,)
        ).fetchone()

    again = dags_test(airflow_stack, "source_refashion", conf)
    assert again["outcome"] == "applied"
    assert again["counts"]["unchanged"] == 12 and again["counts"]["rows_written"] == 0

    # Changed feed: one name corrected by the partner, one point gone (1/12 < 10%: no approval).
    rows = fixture_rows("refashion.json")
    rows[4]["nom_de_lorganisme"] = "Relais Textile Exempleville Centre"
    gone = rows.pop(5)
    feeds.set_dataset("donnees-eo-refashion", rows)
    changed = dags_test(airflow_stack, "source_refashion", conf)
    assert changed["outcome"] == "applied"
    assert changed["counts"]["changed"] == 1 and changed["counts"]["deactivated"] == 1
    assert changed["guard"]["needs_approval"] is False
    statuts = _acteurs(dsn, ("refashion",))
    assert list(statuts.values()).count("SUPPRIME") == 1
    assert any(gone["id_point_apport_ou_reparation"] in key for key, s in statuts.items() if s == "SUPPRIME")

    with psycopg.connect(dsn) as conn:
        revision_after = conn.execute(
            "SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r WHERE identifiant_unique = %s", (revised,)
        ).fetchone()
        staging = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'").fetchone()[0]
    assert revision_after == revision_before
    assert staging == 0
    runs = Path(airflow_stack.env["QFDMO_DATA_DIR"]) / "runs" / "source_refashion"
    assert not runs.exists() or not any(runs.iterdir()), "run files left after successful runs"


def _radius_search_is_in_metres(dsn: str) -> None:
    """The carte's radius search on what the DAG wrote: ST_DWithin on geography, in metres, finds
    what a great-circle distance computed here finds (the feed's points lie within 3 km of Grenoble)."""
    with psycopg.connect(dsn) as conn:
        points = conn.execute(
            "SELECT identifiant_unique, ST_Y(location::geometry), ST_X(location::geometry) FROM qfdmo_acteur"
            " WHERE location IS NOT NULL"
        ).fetchall()
        center_lat, center_lon = 45.181, 5.721

        def within(metres: int, lat: float = center_lat, lon: float = center_lon) -> set[str]:
            rows = conn.execute(
                "SELECT identifiant_unique FROM qfdmo_acteur"
                " WHERE ST_DWithin(location, ST_MakePoint(%s, %s)::geography, %s)",
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


def test_failed_run_leaves_the_database_as_it_was(airflow_stack, feeds):
    dsn = airflow_stack.carte_dsn
    before = _snapshot(dsn, ("refashion",))
    feeds.set_dataset("donnees-eo-refashion", [])
    empty = dags_test(airflow_stack, "source_refashion", {"endpoint_url": feeds.datafair_url("donnees-eo-refashion")})
    assert empty["outcome"] == "not applied: failed at download"
    assert "returned no rows" in empty["_output"]
    assert _snapshot(dsn, ("refashion",)) == before


# --- approval paths: through the stack's scheduler (under `dags test` a HITL task waits forever) ---


_TOKENS: dict[str, str] = {}


def _api(stack, method: str, path: str, body: dict | None = None, attempts: int = 5) -> dict:
    """REST call with a cached token; a busy api-server (timeouts, 5xx) is retried, 4xx raised."""
    for attempt in range(1, attempts + 1):
        try:
            if stack.api_url not in _TOKENS:
                _TOKENS[stack.api_url] = stack.token()
            request = urllib.request.Request(
                f"{stack.api_url}/api/v2{path}",
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {_TOKENS[stack.api_url]}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
            return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                _TOKENS.pop(stack.api_url, None)
            elif exc.code < 500 or attempt == attempts:
                raise
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            if attempt == attempts:
                raise
        time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def _trigger(stack, dag_id: str, conf: dict) -> str:
    def dag_known():
        try:
            return _api(stack, "GET", f"/dags/{dag_id}")
        except urllib.error.HTTPError:
            return None

    wait_until(dag_known, f"{dag_id} to be parsed", 120, interval=3)
    _api(stack, "PATCH", f"/dags/{dag_id}", {"is_paused": False})
    run = _api(stack, "POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    return run["dag_run_id"]


def _task_state(stack, dag_id: str, run_id: str, task_id: str) -> str | None:
    return _api(stack, "GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")


def _finished(stack, dag_id: str, run_id: str, timeout: float = 600) -> str:
    return wait_until(
        lambda: (s := _api(stack, "GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]) in ("success", "failed") and s,
        f"{dag_id} {run_id} to finish",
        timeout,
        interval=3,
    )


def _report(stack, dag_id: str, run_id: str) -> dict:
    from qfdmo.pipeline.paths import report_path

    return json.loads(report_path(dag_id, run_id, base=Path(stack.env["QFDMO_DATA_DIR"])).read_text())


HUMAN_DELAY_S = 5  # several scheduler loops


def test_large_deactivation_waits_for_a_human(airflow_stack, feeds):
    """Half of refashion's points vanish: rejected and timed-out runs apply nothing; approval applies."""
    dag_id = "source_refashion"
    dsn = airflow_stack.carte_dsn
    url = feeds.datafair_url("donnees-eo-refashion", size="5")
    dags_test(airflow_stack, dag_id, {"endpoint_url": url})  # start from the full feed
    before = _snapshot(dsn, ("refashion",))
    feeds.set_dataset("donnees-eo-refashion", fixture_rows("refashion.json")[6:])

    # 1. Nobody answers within approval_timeout: the default (Reject) applies nothing.
    timed_out = _trigger(airflow_stack, dag_id, {"endpoint_url": url, "approval_timeout": 5})
    assert _finished(airflow_stack, dag_id, timed_out) == "success"
    report = _report(airflow_stack, dag_id, timed_out)
    assert report["outcome"] == "not applied: timed out" and report["guard"]["needs_approval"]
    assert _task_state(airflow_stack, dag_id, timed_out, "apply") == "skipped"
    assert _snapshot(dsn, ("refashion",)) == before

    # 2. and 3. A human answers through the HITL API: Reject, then Approve.
    for choice, outcome in (("Reject", "not applied: rejected"), ("Approve", "applied")):
        run_id = _trigger(airflow_stack, dag_id, {"endpoint_url": url, "approval_timeout": 600})
        wait_until(lambda rid=run_id: _task_state(airflow_stack, dag_id, rid, "request_approval") == "awaiting_input",
                   "the approval request", 600, interval=3)
        hitl = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/request_approval/-1/hitlDetails"
        assert "would be set **SUPPRIME**" in _api(airflow_stack, "GET", hitl)["body"]
        # Answer once the scheduler has handled the pausing workload's "success" event (as a person
        # would, much later): an answer that re-queues the task before that makes Airflow 3.3 take
        # the stale event for the new attempt and fail the task. The event comes when the workload's
        # process ends, which can be several seconds after the pause: wait for it, not for a delay.
        scheduler_log = airflow_stack.stack.config.state_dir / "logs" / "scheduler.log"
        handled = (f"Received executor event with state success for task instance TaskInstanceKey("
                   f"dag_id='{dag_id}', task_id='request_approval', run_id='{run_id}'")
        wait_until(lambda log=scheduler_log, line=handled: line in log.read_text(errors="replace"),
                   "the scheduler to handle the paused workload", 120, interval=1)
        time.sleep(HUMAN_DELAY_S)
        _api(airflow_stack, "PATCH", hitl, {"chosen_options": [choice]})
        assert _finished(airflow_stack, dag_id, run_id) == "success"
        report = _report(airflow_stack, dag_id, run_id)
        assert report["outcome"] == outcome
        if choice == "Reject":
            assert report["guard"]["approval"]["responded_by"]
            assert _snapshot(dsn, ("refashion",)) == before
    statuts = _acteurs(dsn, ("refashion",))
    assert list(statuts.values()).count("SUPPRIME") == 5
    _api(airflow_stack, "PATCH", f"/dags/{dag_id}", {"is_paused": True})


# --- the other formats: first load, bad rows counted, unchanged re-run ---


@pytest.mark.parametrize(
    ("dag_id", "dataset", "kind", "source_codes", "expected_new", "expected_rejected"),
    [
        ("source_ocab", "donnees-eo-ocab", "datafair", ("ocab_valobat", "ocab_ecomaison", "ocab_valdelia",
                                                        "ocab_ecominero"), 9, 1),
        ("source_cma_reparacteur", "reparacteurs", "explore", ("cma_reparacteur",), 227, 3),
        ("source_ademesinoedecheteries", "sinoe-(r)-annuaire-des-decheteries-dma", "sinoe",
         ("ademesinoedecheteries",), 7, 2),
    ],
)
def test_other_formats_load_rerun_change_truncate_with_revision(
    airflow_stack, feeds, dag_id, dataset, kind, source_codes, expected_new, expected_rejected
):
    if kind == "explore":
        url = feeds.explore_url(dataset)
    elif kind == "sinoe":
        url = feeds.datafair_url(dataset, size="4", q_mode="simple", ANNEE_eq="2024")
    else:
        url = feeds.datafair_url(dataset, size="3")
    first = dags_test(airflow_stack, dag_id, {"endpoint_url": url})
    assert first["outcome"] == "applied", first["_output"][-3000:]
    assert first["counts"]["new"] == expected_new, first["counts"]
    assert first["counts"]["rejected"] == expected_rejected, first["rejections"]
    assert len(_acteurs(airflow_stack.carte_dsn, source_codes)) == expected_new
    again = dags_test(airflow_stack, dag_id, {"endpoint_url": url})
    assert again["counts"]["unchanged"] == expected_new and again["counts"]["rows_written"] == 0

    # A human corrected one acteur: the revision must survive the runs below untouched.
    dsn = airflow_stack.carte_dsn
    revised = sorted(_acteurs(dsn, source_codes))[0]
    revision = "SELECT row_to_json(r)::text FROM qfdmo_revisionacteur r WHERE identifiant_unique = %s"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, nom, public_accueilli, reprise)"
            " VALUES (%s, 'Corrigé', '', '')",
            (revised,),
        )
        revision_before = conn.execute(revision, (revised,)).fetchone()
    # The guard is format-independent (covered with the scheduler above); `dags test` cannot answer
    # an approval, so these runs allow any deactivation share.
    conf = {"endpoint_url": url, "max_deactivation_share": 1.0}

    # Changed feed: the partner renames its points.
    name = {"datafair": "nom_de_lorganisme", "explore": "name", "sinoe": "N_SERVICE"}[kind]
    rows = fixture_rows(DATASETS[dataset])
    for row in rows:
        if isinstance(row.get(name), str) and row[name].strip():
            row[name] += " (nouveau nom)"
    feeds.set_dataset(dataset, rows)
    changed = dags_test(airflow_stack, dag_id, conf)
    assert changed["outcome"] == "applied", changed["_output"][-3000:]
    assert changed["counts"]["changed"] >= 1 and changed["counts"]["rows_written"] > 0, changed["counts"]

    # Truncated feed: half of the rows are gone; their acteurs are set SUPPRIME, never deleted.
    feeds.set_dataset(dataset, rows[: len(rows) // 2])
    truncated = dags_test(airflow_stack, dag_id, conf)
    assert truncated["outcome"] == "applied", truncated["_output"][-3000:]
    deactivated = truncated["counts"]["deactivated"]
    assert deactivated > 0
    statuts = _acteurs(dsn, source_codes)
    assert list(statuts.values()).count("SUPPRIME") >= deactivated and len(statuts) >= expected_new
    with psycopg.connect(dsn) as conn:
        assert conn.execute(revision, (revised,)).fetchone() == revision_before
