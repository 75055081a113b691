"""scripts/deploy_dags.sh against a real S3 server (moto on loopback)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "scripts" / "deploy_dags.sh"
KEY_ID = "AKIAQFDMODEPLOYKEY42"
SECRET = "deploy/Secret+Value/0042xyz"
MANIFEST = ".deploy-manifest.json"

_buckets = itertools.count()


@pytest.fixture
def bucket(s3_server) -> str:
    name = f"deploy-test-{os.getpid()}-{next(_buckets)}"
    s3_server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def source(tmp_path) -> Path:
    files = {
        "source_a.py": "A = 1\n",
        ".airflowignore": "qfdmo/\n",
        "qfdmo/__init__.py": "",
        "qfdmo/feeds/client.py": "CLIENT = 1\n",
        "qfdmo/__pycache__/client.cpython-311.pyc": "binary",
        "download_dags.py": "# shipped by the image, never by the bucket\n",
        ".env": "LOCAL=1\n",
        ".env.template": "LOCAL=\n",
        "tests/test_something.py": "def test(): pass\n",
    }
    for rel, content in files.items():
        path = tmp_path / "dags" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return tmp_path / "dags"


def run_deploy(s3_server, bucket: str, source: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    process_env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "DAGS_BUCKET": f"s3://{bucket}/dags",
        "DAGS_SOURCE_DIR": str(source),
        "DEPLOY_ID": "test-deploy",
        **env,
    }
    result = subprocess.run([str(DEPLOY), *args], env=process_env, capture_output=True, text=True, timeout=120)
    for secret in (KEY_ID, SECRET):
        assert secret not in result.stdout + result.stderr
    return result


def bucket_keys(s3_server, bucket: str) -> set[str]:
    return {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])}


def manifest(s3_server, bucket: str) -> dict:
    return json.loads(s3_server.client().get_object(Bucket=bucket, Key=f"dags/{MANIFEST}")["Body"].read())


def test_deploy_uploads_dags_with_hashes_and_a_manifest(s3_server, bucket, source):
    result = run_deploy(s3_server, bucket, source)

    assert result.returncode == 0, result.stderr
    shipped = {"source_a.py", ".airflowignore", "qfdmo/__init__.py", "qfdmo/feeds/client.py"}
    assert bucket_keys(s3_server, bucket) == {f"dags/{rel}" for rel in shipped | {MANIFEST}}
    data = manifest(s3_server, bucket)
    assert data["deploy_id"] == "test-deploy" and set(data["files"]) == shipped
    entry = data["files"]["source_a.py"]
    assert entry["md5"] == hashlib.md5(b"A = 1\n").hexdigest() and entry["size"] == 6
    head = s3_server.client().head_object(Bucket=bucket, Key="dags/source_a.py")
    assert head["Metadata"]["md5"] == entry["md5"] and head["ETag"].strip('"') == entry["etag"]
    assert "uploaded 4, unchanged 0, deleted 0" in result.stdout


def test_redeploy_skips_unchanged_and_deletes_removed_keys(s3_server, bucket, source):
    assert run_deploy(s3_server, bucket, source).returncode == 0
    (source / "qfdmo/feeds/client.py").unlink()
    (source / "source_a.py").write_text("A = 2\n")

    result = run_deploy(s3_server, bucket, source, DEPLOY_ID="second")

    assert result.returncode == 0, result.stderr
    assert "uploaded 1, unchanged 2, deleted 1" in result.stdout
    assert "dags/qfdmo/feeds/client.py" not in bucket_keys(s3_server, bucket)
    assert set(manifest(s3_server, bucket)["files"]) == {"source_a.py", ".airflowignore", "qfdmo/__init__.py"}


def test_dry_run_changes_nothing(s3_server, bucket, source):
    result = run_deploy(s3_server, bucket, source, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would upload 4" in result.stdout
    assert bucket_keys(s3_server, bucket) == set()


def test_manifest_is_written_after_uploads_and_before_deletions(s3_server, bucket, source):
    """The order that keeps syncs from publishing a mix of two deploys (see dags_delivery/deploy.py)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from dags_delivery import deploy as deploy_dags
    finally:
        sys.path.remove(str(REPO / "scripts"))
    client = s3_server.client()
    deploy_dags.deploy(client, bucket, "dags/", source, "first", 4, False)
    (source / "qfdmo/feeds/client.py").unlink()
    (source / "source_a.py").write_text("A = 2\n")
    calls: list[str] = []

    def record(params, model, **_):
        key = params.get("Key") or ",".join(o["Key"] for o in params.get("Delete", {}).get("Objects", []))
        calls.append(f"{model.name} {key}")

    client.meta.events.register("provide-client-params.s3.PutObject", record)
    client.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    deploy_dags.deploy(client, bucket, "dags/", source, "second", 4, False)

    assert calls == [
        "PutObject dags/source_a.py",
        f"PutObject dags/{MANIFEST}",
        "DeleteObjects dags/qfdmo/feeds/client.py",
    ]


def test_unreachable_endpoint_fails_without_leaking_credentials(s3_server, bucket, source):
    result = run_deploy(s3_server, bucket, source, S3_ENDPOINT_URL="http://127.0.0.1:9")
    assert result.returncode == 1
    assert "deploy: FAILED" in result.stderr and "Traceback" not in result.stderr
