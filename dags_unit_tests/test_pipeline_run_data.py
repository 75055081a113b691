"""A source run's hand-over between tasks (qfdmo.pipeline.run_data) and its retention
(qfdmo.pipeline.retention, steps.finish) against the local S3 (moto) and a real carte database:
streamed uploads, each task on its own scratch disk ("machine"), a failed run's data kept then swept."""

from __future__ import annotations

import gzip
import itertools
import os
import random

import psycopg
import pytest
from fakes import feed_server  # noqa: F401 - pytest fixture
from qfdmo.carte_db.staging_format import FILES
from qfdmo.pipeline import S3RunStore, apply, check_feed, download, finish, normalise, stage
from qfdmo.pipeline.run_data import GZIP_SUFFIX, NORMALISED_DIR, RAW_FILE, S3Upload
from qfdmo.sources import load_declarations

from devstack.config import RUNS_BUCKET

_prefixes = itertools.count()


@pytest.fixture
def store(s3_server) -> S3RunStore:
    return S3RunStore(s3_server.client(), RUNS_BUCKET, f"test-run-data-{os.getpid()}-{next(_prefixes)}/")


def _keys(store: S3RunStore, under: str = "") -> list[str]:
    answer = store.client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + under)
    return sorted(item["Key"][len(store.prefix) + len(under):] for item in answer.get("Contents", []))


def _staging_tables(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'qfdmo_staging'").fetchone()[0]


def test_a_large_object_streams_in_parts_and_a_failed_write_leaves_nothing(store, tmp_path):
    data = store.run("source_x", "manual__2026-12-01T10:00:00+00:00")
    assert data.location == f"s3://{RUNS_BUCKET}/{store.prefix}runs/source_x/manual__2026-12-01T10_00_00_00_00/"
    noise = random.Random(13).randbytes(2 * S3Upload.PART_SIZE + 100_000)  # incompressible: three parts
    with data.writer(RAW_FILE) as out:
        for start in range(0, len(noise), 65_536):
            out.write(noise[start:start + 65_536])
    assert isinstance(out, S3Upload) and out._upload_id is not None and len(out._parts) == 3
    assert data.local_copy(RAW_FILE, tmp_path).read_bytes() == noise

    text = b'{"results": [{"nom": "Ressourcerie"}]}\n' * 100_000  # 3.8 MB of JSON: one small gzip PUT
    with data.writer("text.jsonl") as out:
        out.write(text)
    assert out._upload_id is None and out.bytes == len(text)
    size = store.client.head_object(Bucket=RUNS_BUCKET, Key=f"{data.prefix}text.jsonl{GZIP_SUFFIX}")["ContentLength"]
    assert size < len(text) / 20
    assert gzip.decompress(store.client.get_object(
        Bucket=RUNS_BUCKET, Key=f"{data.prefix}text.jsonl{GZIP_SUFFIX}")["Body"].read()) == text  # zcat reads it

    with pytest.raises(RuntimeError, match="feed broke"), data.writer("other.jsonl") as out:
        out.write(noise)  # two parts sent
        raise RuntimeError("feed broke")
    assert _keys(store) == [f"runs/source_x/manual__2026-12-01T10_00_00_00_00/{name}{GZIP_SUFFIX}"
                            for name in (RAW_FILE, "text.jsonl")]
    assert not store.client.list_multipart_uploads(Bucket=RUNS_BUCKET, Prefix=store.prefix).get("Uploads")

    data.put("small.json", b"{}")  # a small object as it is
    assert data.get("small.json") == b"{}" and data.get("missing.json") is None
    assert data.delete() == 3 and _keys(store) == []
    assert store.at(data.location) == data
    with pytest.raises(ValueError, match="is not a run of"):
        store.at(f"s3://{RUNS_BUCKET}/elsewhere/")


def test_each_task_on_its_own_machine_and_a_failed_run_kept_then_swept(feed_server, carte_dsn, store,  # noqa: F811
                                                                       tmp_path):
    """Every step gets a scratch disk of its own (as on another machine): nothing one step leaves on
    its disk is read by the next. A run whose stage fails keeps its data (feed and normalised rows)
    N days, recorded in qfdmo_platform.kept_run; a later cleanup sweeps it once past its date."""
    declaration = load_declarations()["refashion"]
    url = feed_server.datafair_url("donnees-eo-refashion", size="5")
    machines = [tmp_path / f"machine{i}" for i in range(3)]
    data = store.run("source_refashion", "run1")

    downloaded = download(declaration, url, data)
    assert _keys(store, "runs/source_refashion/run1/") == [RAW_FILE + GZIP_SUFFIX]
    checked = check_feed(declaration, data, carte_dsn, downloaded)
    normalised = normalise(declaration, data, "handover_run1", carte_dsn, scratch_base=machines[0])
    assert set(normalised.step_seconds) == {"fetch", "normalise", "load"}
    assert list((machines[0] / "scratch").iterdir()) == []  # the scratch went with the task
    staged = stage(declaration, "handover_run1", carte_dsn, 0.1)
    assert staged.rows["acteurs.tsv"] == normalised.acteurs_written and staged.diff.new == 12
    applied = apply(declaration, "handover_run1", carte_dsn, checked, normalised, staged)
    assert applied.wrote_rows
    done = finish("handover_run1", carte_dsn, data, settled=True, sweep_with=store.at)
    assert done.removed == 1 and done.kept_until is None and _keys(store) == []

    # A second run fails at stage (a code the reference does not know): its data is kept.
    failed = store.run("source_refashion", "run2")
    download(declaration, url, failed)
    normalise(declaration, failed, "handover_run2", carte_dsn, scratch_base=machines[1])
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("UPDATE qfdmo_staging.acteurs_raw_handover_run2 SET acteur_type_code = 'inconnu' "
                     "WHERE row_number = (SELECT min(row_number) FROM qfdmo_staging.acteurs_raw_handover_run2)")
    with pytest.raises(Exception, match="inconnu"):
        stage(declaration, "handover_run2", carte_dsn, 0.1)
    kept = finish("handover_run2", carte_dsn, failed, settled=False, dag_id="source_refashion", run_id="run2",
                  outcome="not applied: failed at stage_and_diff", retention_days=7, sweep_with=store.at)
    assert kept.kept_until is not None and _staging_tables(carte_dsn) == 0
    assert _keys(store, "runs/source_refashion/run2/") == sorted(
        f"{name}{GZIP_SUFFIX}" for name in [RAW_FILE, *(f"{NORMALISED_DIR}/{name}" for name in FILES)])
    acteurs = failed.local_copy(f"{NORMALISED_DIR}/acteurs.tsv", tmp_path / "diagnosis").read_bytes()
    assert b"inconnu" in acteurs and acteurs.count(b"\n") == normalised.acteurs_written
    with psycopg.connect(carte_dsn) as conn:
        record = conn.execute("SELECT location, outcome, kept_until - kept_since FROM qfdmo_platform.kept_run"
                              ).fetchone()
    assert record[0] == failed.location and record[1].endswith("stage_and_diff") and record[2].days == 7

    # Not yet past its date: another run's cleanup leaves it.
    third = store.run("source_refashion", "run3")
    third.put("nomenclature.json", b"{}")
    assert finish("handover_run3", carte_dsn, third, settled=True, sweep_with=store.at).swept == 0
    assert f"{RAW_FILE}{GZIP_SUFFIX}" in _keys(store, "runs/source_refashion/run2/")
    # Past its date: swept, data and record.
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("UPDATE qfdmo_platform.kept_run SET kept_until = now() - interval '1 minute'")
    assert finish("handover_run4", carte_dsn, store.run("source_refashion", "run4"), settled=True,
                  sweep_with=store.at).swept == 1
    assert _keys(store) == []
    with psycopg.connect(carte_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM qfdmo_platform.kept_run").fetchone()[0] == 0


def test_a_failed_run_cleared_and_rerun_to_its_end_is_no_longer_kept(carte_dsn, store):
    data = store.run("source_refashion", "retried")
    data.put("nomenclature.json", b"{}")
    finish("handover_retried", carte_dsn, data, settled=False, dag_id="source_refashion", run_id="retried",
           outcome="not applied: failed at normalise", retention_days=7)
    finish("handover_retried", carte_dsn, data, settled=True)
    with psycopg.connect(carte_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM qfdmo_platform.kept_run").fetchone()[0] == 0
    assert _keys(store) == []
