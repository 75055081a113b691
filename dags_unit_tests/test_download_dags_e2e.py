"""download_dags_from_s3 end to end on the local stack: `bin/airflow dags test` in preprod, a run through
the stack's scheduler in development, and a running dag-processor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import uuid
from pathlib import Path

import pytest
from stack_runs import set_paused, succeeded, task_log, task_state, trigger

REPO = Path(__file__).resolve().parents[1]
DAG_ID = "download_dags_from_s3"


def deploy(airflow_stack, bucket: str, source: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "e2e",
        "AWS_SECRET_ACCESS_KEY": "e2e-secret",
        "S3_ENDPOINT_URL": airflow_stack.s3_endpoint_url,
        "DAGS_BUCKET": bucket,
        "DAGS_SOURCE_DIR": str(source),
    }
    subprocess.run([str(REPO / "scripts" / "deploy_dags.sh")], env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture
def bucket(airflow_stack, s3_server) -> str:
    name = f"e2e-dags-{uuid.uuid4().hex[:10]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def dags_folder(tmp_path) -> Path:
    """A DAG folder as the image ships it: the download DAG and a local-only file."""
    folder = tmp_path / "airflow" / "dags"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "dags" / "download_dags.py", folder / "download_dags.py")
    (folder / ".env").write_text("LOCAL_ONLY=1\n")
    return folder


def sync_env(airflow_stack, bucket: str, dags_folder: Path, environment: str = "preprod") -> dict[str, str]:
    return {
        "ENVIRONMENT": environment,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "CELLAR_ADDON_HOST": airflow_stack.s3_endpoint_url,
        "CELLAR_ADDON_BUCKET": bucket,
        "SYNC_DAGS_SCRIPT": str(REPO / "sync_dags.sh"),
    }


def test_dag_definition():
    from airflow.dag_processing.dagbag import DagBag

    path = REPO / "dags" / "download_dags.py"
    bag = DagBag(dag_folder=str(path), bundle_path=path.parent)
    assert not bag.import_errors
    dag = bag.dags[DAG_ID]
    assert dag.dag_display_name == "Téléchargement des DAGs depuis S3"
    assert dag.timetable.expression == "*/5 * * * *"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.owner and dag.tags and dag.description
    assert [(task.task_id, task.retries) for task in dag.tasks] == [("sync_dags", 1)]


def test_dag_run_mirrors_the_bucket_in_preprod(airflow_stack, bucket, dags_folder, tmp_path):
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "synced_dag.py").write_text("# a DAG file from the bucket\n")
    (source / "pkg" / "helpers.py").write_text("HELPER = 1\n")
    deploy(airflow_stack, bucket, source)

    result = airflow_stack.airflow("dags", "test", DAG_ID, env=sync_env(airflow_stack, bucket, dags_folder))

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "dags sync: added 2, changed 0, deleted 0" in output
    assert dags_folder.is_symlink()
    assert (dags_folder / "synced_dag.py").read_text() == "# a DAG file from the bucket\n"
    assert (dags_folder / "pkg" / "helpers.py").exists()
    # The DAG itself and the local-only file survive the mirror.
    assert (dags_folder / "download_dags.py").read_bytes() == (REPO / "dags" / "download_dags.py").read_bytes()
    assert (dags_folder / ".env").read_text() == "LOCAL_ONLY=1\n"


def test_scheduled_run_does_nothing_in_development(airflow_stack):
    """The stack itself runs in development (as `make run`): a run of the DAG through its scheduler
    skips, and what sits in the bucket the stack would mirror never reaches its DAG folder. (A
    scheduler run, not a second `dags test`: the CLI path is the test above's.)"""
    assert airflow_stack.env["ENVIRONMENT"] == "development", "the test stack must run in development"
    probe = f"must_not_arrive_{uuid.uuid4().hex[:8]}.py"
    airflow_stack.stack.s3.client().put_object(Bucket=airflow_stack.dags_bucket, Key=probe, Body=b"# must not arrive\n")
    run_id = trigger(airflow_stack, DAG_ID, {})
    try:
        assert succeeded(airflow_stack, DAG_ID, run_id)
    finally:
        set_paused(airflow_stack, DAG_ID, True)  # every 5 minutes otherwise
    assert task_state(airflow_stack, DAG_ID, run_id, "sync_dags") == "skipped"
    assert "DAGs come from the working tree" in json.dumps(task_log(airflow_stack, DAG_ID, run_id, "sync_dags"))
    folder = airflow_stack.dags_folder
    assert not folder.is_symlink() and not (folder / probe).exists()


def test_delay_from_upload_to_parsed_dag(airflow_stack, bucket, tmp_path):
    """Upload a new DAG, then an edit of it; sync each time and time until the API shows it.

    The synced folder is a sub-folder of the stack's DAG folder (releases kept outside it), so the
    stack's dag-processor, with the platform's intervals, sees it through the symlink.
    """
    dag_id = f"probe_{uuid.uuid4().hex[:8]}"
    source = tmp_path / "src"
    source.mkdir()

    def write_probe(tag: str) -> None:
        (source / f"{dag_id}.py").write_text(
            "from datetime import datetime\n"
            "from airflow.sdk import dag\n\n\n"
            f"@dag(dag_id={dag_id!r}, schedule=None, start_date=datetime(2025, 1, 1), tags=[{tag!r}])\n"
            "def probe():\n    pass\n\n\nprobe()\n"
        )

    synced = airflow_stack.dags_folder / f"synced_{dag_id}"
    env = {
        **os.environ,
        **airflow_stack.env,
        **sync_env(airflow_stack, bucket, synced),
        "DAGS_SYNC_RELEASES_DIR": str(tmp_path / "releases"),
    }

    def publish_and_wait(tag: str) -> dict[str, float]:
        write_probe(tag)
        deploy(airflow_stack, bucket, source)
        uploaded = time.monotonic()
        sync = subprocess.run([str(REPO / "sync_dags.sh")], env=env, capture_output=True, text=True, timeout=120)
        assert sync.returncode == 0, sync.stderr
        synced_at = time.monotonic()
        deadline = synced_at + 240
        while True:
            try:
                found = airflow_stack.api("GET", f"/api/v2/dags/{dag_id}")
                if tag in {t["name"] for t in found.get("tags", [])}:
                    break
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
            assert time.monotonic() < deadline, f"{dag_id} with tag {tag} never showed up"
            time.sleep(0.25)
        parsed = time.monotonic()
        return {
            "sync_s": round(synced_at - uploaded, 1),
            "sync_to_parsed_s": round(parsed - synced_at, 1),
            "upload_to_parsed_s": round(parsed - uploaded, 1),
        }

    try:
        figures = {"new_dag": publish_and_wait("first"), "edited_dag": publish_and_wait("second")}
    finally:
        if synced.is_symlink():
            synced.unlink()
    print(f"upload-to-parsed delay (sync run right after the upload): {json.dumps(figures)}")
    report = os.environ.get("QFDMO_SYNC_DELAY_REPORT")
    if report:
        Path(report).write_text(json.dumps(figures))
