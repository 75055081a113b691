"""sync_dags.sh against a real S3 server (moto on loopback), run as the DAG runs it: a subprocess."""

from __future__ import annotations

import hashlib
import http.server
import itertools
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

REPO = Path(__file__).resolve().parents[1]
SYNC = REPO / "sync_dags.sh"
DEPLOY = REPO / "scripts" / "deploy_dags.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# Credentials of these tests: distinctive, so any leak into the output is caught.
KEY_ID = "AKIAQFDMOTESTKEY7733"
SECRET = "s3cr3t/QfdmoSyncTest+Value9911"

_buckets = itertools.count()


class Bucket:
    def __init__(self, s3_server, name: str, prefix: str = "") -> None:
        self.endpoint = s3_server.endpoint_url
        self.name = name
        self.prefix = prefix
        self.client = s3_server.client()
        self.client.create_bucket(Bucket=name)

    def put(self, rel: str, body: bytes | str) -> None:
        self.client.put_object(Bucket=self.name, Key=self.prefix + rel, Body=body)

    def delete(self, rel: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=self.prefix + rel)

    def deploy(self, source: Path, deploy_id: str = "test") -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "S3_ENDPOINT_URL": self.endpoint,
            "DAGS_BUCKET": f"s3://{self.name}/{self.prefix}",
            "DAGS_SOURCE_DIR": str(source),
            "DEPLOY_ID": deploy_id,
        }
        result = subprocess.run([str(DEPLOY)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result


def sync_env(bucket: Bucket, folder: Path, **extra: str) -> dict[str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELLAR_", "DAGS_"))},
        "ENVIRONMENT": "preprod",
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "CELLAR_ADDON_HOST": bucket.endpoint,
        "CELLAR_ADDON_KEY_ID": KEY_ID,
        "CELLAR_ADDON_KEY_SECRET": SECRET,
        "CELLAR_ADDON_BUCKET": f"{bucket.name}/{bucket.prefix}".rstrip("/"),
        "DAGS_SYNC_PYTHON": str(VENV_PYTHON),
        "DAGS_SYNC_MANIFEST_RETRY_WAIT": "0",
    }
    env.update(extra)
    return env


def run_sync(bucket: Bucket, folder: Path, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(SYNC)], env=sync_env(bucket, folder, **extra), capture_output=True, text=True, timeout=120
    )
    assert_no_secret(result.stdout + result.stderr)
    return result


def assert_no_secret(output: str) -> None:
    for secret in (KEY_ID, SECRET):
        for start in range(0, len(secret) - 7):
            assert secret[start : start + 8] not in output, "a part of a credential was printed"


def tree(folder: Path) -> dict[str, str]:
    """Relative path -> content of every file below folder (hidden ones included)."""
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.fixture
def bucket(s3_server) -> Bucket:
    return Bucket(s3_server, f"dags-sync-{os.getpid()}-{next(_buckets)}", prefix="dags/")


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A DAG folder as the image ships it: a real directory with the local-only files."""
    return write_tree(
        tmp_path / "airflow" / "dags",
        {
            "download_dags.py": "# the image's download DAG\n",
            ".env": "LOCAL_ONLY=1\n",
            ".env.template": "LOCAL_ONLY=\n",
            "baked_in_old.py": "# shipped with the image, not in the bucket\n",
        },
    )


SOURCE = {
    "source_a.py": "A = 1\n",
    "qfdmo/__init__.py": "",
    "qfdmo/feeds/__init__.py": "",
    "qfdmo/feeds/client.py": "CLIENT = 'v1'\n",
    ".airflowignore": "qfdmo/\n",
}


def test_first_sync_mirrors_nested_packages_and_keeps_local_files(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source, "deploy-1")
    # Bucket copies of protected files must never replace the local ones.
    bucket.put("download_dags.py", "# from the bucket\n")
    bucket.put(".env", "FROM_BUCKET=1\n")

    result = run_sync(bucket, image_folder)

    assert result.returncode == 0, result.stderr
    assert image_folder.is_symlink()
    files = tree(image_folder)
    assert {rel: files[rel] for rel in SOURCE} == SOURCE
    assert files["download_dags.py"] == "# the image's download DAG\n"
    assert files[".env"] == "LOCAL_ONLY=1\n"
    assert files[".env.template"] == "LOCAL_ONLY=\n"
    assert "baked_in_old.py" not in files
    assert ".deploy-manifest.json" not in files
    assert "deploy deploy-1" in result.stdout
    assert re.search(r"added 5, changed 0, deleted 1, unchanged 0, refused 0 in \d+\.\d\d s", result.stdout)
    # The image's directory is kept as the previous release (rollback target).
    releases = image_folder.parent / ".dags.releases"
    previous = [p for p in releases.iterdir() if p.name.endswith("-initial")]
    assert len(previous) == 1 and (previous[0] / "baked_in_old.py").exists()


def test_edit_of_same_size_and_mtime_is_synced(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source)
    assert run_sync(bucket, image_folder).returncode == 0
    client = source / "qfdmo/feeds/client.py"
    stat = client.stat()
    client.write_text("CLIENT = 'v2'\n")  # same size
    os.utime(client, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    bucket.deploy(source, "deploy-2")

    result = run_sync(bucket, image_folder)

    assert result.returncode == 0, result.stderr
    assert (image_folder / "qfdmo/feeds/client.py").read_text() == "CLIENT = 'v2'\n"
    assert "changed 1, deleted 0, unchanged 4" in result.stdout


def test_without_manifest_the_listing_is_mirrored_by_content(bucket, image_folder):
    bucket.put("a.py", "X = 1\n")
    bucket.put("pkg/b.py", "Y = 1\n")
    assert run_sync(bucket, image_folder).returncode == 0
    bucket.put("a.py", "X = 2\n")  # same size, same second
    bucket.delete("pkg/b.py")

    result = run_sync(bucket, image_folder)

    assert result.returncode == 0, result.stderr
    assert "no deploy manifest" in result.stdout
    files = tree(image_folder)
    assert files["a.py"] == "X = 2\n" and "pkg/b.py" not in files
    assert "changed 1, deleted 1" in result.stdout


def test_deletion_then_noop_sync_creates_no_release(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source)
    assert run_sync(bucket, image_folder).returncode == 0
    (source / "qfdmo/feeds/client.py").unlink()
    bucket.deploy(source, "deploy-2")

    result = run_sync(bucket, image_folder)
    assert result.returncode == 0, result.stderr
    assert not (image_folder / "qfdmo/feeds/client.py").exists()
    assert "deleted 1" in result.stdout
    release = os.readlink(image_folder)

    noop = run_sync(bucket, image_folder)
    assert noop.returncode == 0, noop.stderr
    assert "added 0, changed 0, deleted 0, unchanged 4" in noop.stdout
    assert os.readlink(image_folder) == release
    # Current + previous release only: older ones are pruned.
    assert len([p for p in (image_folder.parent / ".dags.releases").iterdir() if p.is_dir()]) == 2


def test_sync_during_an_upload_keeps_the_current_tree(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source, "deploy-1")
    assert run_sync(bucket, image_folder).returncode == 0
    before = tree(image_folder)
    # Deploy 2 has uploaded one of its two files and not yet written its manifest.
    bucket.put("source_a.py", "A = 2  # deploy 2\n")

    result = run_sync(bucket, image_folder, DAGS_SYNC_MANIFEST_RETRIES="1")

    assert result.returncode == 75
    assert "deploy in progress" in result.stderr and "source_a.py" in result.stderr
    assert "retry 1/1" in result.stdout
    assert tree(image_folder) == before

    # The manifest names a key that is gone (deleted by a newer deploy): not published either.
    bucket.delete("qfdmo/feeds/client.py")
    bucket.put("source_a.py", SOURCE["source_a.py"])
    result = run_sync(bucket, image_folder, DAGS_SYNC_MANIFEST_RETRIES="0")
    assert result.returncode == 75, result.stdout
    assert tree(image_folder) == before

    # Once the deploy has finished (manifest written last), its tree is published whole.
    write_tree(source, {"source_a.py": "A = 2  # deploy 2\n", "source_b.py": "B = 2\n"})
    bucket.deploy(source, "deploy-2")
    result = run_sync(bucket, image_folder)
    assert result.returncode == 0, result.stderr
    files = tree(image_folder)
    assert files["source_a.py"] == "A = 2  # deploy 2\n" and files["source_b.py"] == "B = 2\n"
    assert files["qfdmo/feeds/client.py"] == SOURCE["qfdmo/feeds/client.py"]


def test_s3_unreachable_keeps_last_good_tree_and_fails(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source)
    assert run_sync(bucket, image_folder).returncode == 0
    before = tree(image_folder)
    release = os.readlink(image_folder)

    result = run_sync(bucket, image_folder, CELLAR_ADDON_HOST="http://127.0.0.1:9")  # nothing listens on 9
    assert result.returncode == 1
    assert "FAILED" in result.stderr and "current DAG tree is unchanged" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(image_folder) == before and os.readlink(image_folder) == release

    result = run_sync(bucket, image_folder, CELLAR_ADDON_BUCKET="no-such-bucket-here")
    assert result.returncode == 1
    assert "NoSuchBucket" in result.stderr
    assert tree(image_folder) == before


def test_malicious_and_oversized_keys_are_refused(bucket, image_folder, tmp_path):
    bucket.put("good.py", "G = 1\n")
    for key in ("../escape.py", "pkg/../../escape2.py", "/absolute.py", "win\\dows.py", "./dot.py"):
        bucket.put(key, "import os  # malicious\n")
    bucket.put("big.py", "#" * 2000)

    result = run_sync(bucket, image_folder, DAGS_SYNC_MAX_OBJECT_BYTES="1000")

    assert result.returncode == 3
    assert result.stdout.count("REFUSED key") == 6
    assert "2000 bytes > limit 1000" in result.stdout
    assert tree(image_folder).keys() == {"good.py", "download_dags.py", ".env", ".env.template"}
    assert not list(tmp_path.rglob("escape*.py")) and not list(tmp_path.rglob("absolute.py"))


class _EchoingStore(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that quotes the caller's access key id in its error, as some stores do."""

    def do_GET(self) -> None:
        # Signed by header (the botocore client) or by query string (pre-signed URL): echo both.
        authorization = self.headers.get("Authorization", "")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        credential = query.get("X-Amz-Credential", [authorization.partition("Credential=")[2]])[0]
        key_id = credential.partition("/")[0]
        body = (
            "<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code>"
            f"<Message>The access key {key_id} does not exist; request {escape(self.path)} {authorization}</Message>"
            f"<AWSAccessKeyId>{key_id}</AWSAccessKeyId></Error>"
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_secrets_never_appear_in_output(bucket, image_folder):
    bucket.put("a.py", "A = 1\n")
    assert run_sync(bucket, image_folder).returncode == 0  # run_sync checks every output

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingStore)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_sync(bucket, image_folder, CELLAR_ADDON_HOST=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert result.returncode == 1
    assert "InvalidAccessKeyId" in result.stderr and "***" in result.stderr


def test_development_does_nothing(bucket, image_folder):
    bucket.put("a.py", "A = 1\n")
    before = tree(image_folder)
    for environment in ("development", ""):
        result = run_sync(bucket, image_folder, ENVIRONMENT=environment)
        assert result.returncode == 0 and "nothing to do" in result.stdout
    assert not image_folder.is_symlink() and tree(image_folder) == before


def test_unknown_environment_is_refused(bucket, image_folder):
    """development, preprod, prod: the vocabulary of the entrypoints; a typo must not pass for one."""
    for environment in ("dev", "local", "prd"):
        result = run_sync(bucket, image_folder, ENVIRONMENT=environment)
        assert result.returncode == 2 and f"ENVIRONMENT='{environment}' is unknown" in result.stderr
    assert not image_folder.is_symlink()


def test_missing_configuration_is_reported(bucket, image_folder):
    result = run_sync(bucket, image_folder, CELLAR_ADDON_BUCKET="")
    assert result.returncode == 2 and "CELLAR_ADDON_BUCKET is not set" in result.stderr


def test_switch_is_atomic_readers_always_see_one_complete_deploy(bucket, image_folder, tmp_path):
    """While deploys A and B alternate, every snapshot of DAGS_FOLDER is exactly A or exactly B."""
    names = [f"pkg{i % 4}/dag_{i}.py" for i in range(40)]
    expected: dict[str, dict[str, str]] = {}
    for generation in ("A", "B"):
        # B also drops a file and adds one: the file sets differ, not only the contents.
        files = {name: f"GEN = '{generation}'\n" for name in names[: 39 if generation == "B" else 40]}
        if generation == "B":
            files["extra_b.py"] = "GEN = 'B'\n"
        write_tree(tmp_path / generation, files)
        expected[generation] = files
    local_only = {".env", ".env.template", "download_dags.py"}

    stop = threading.Event()
    problems: list[str] = []
    snapshots = itertools.count()

    def reader() -> None:
        while not stop.wait(0.01):  # leave CPU to the syncs
            if not image_folder.is_symlink():
                continue
            root = Path(os.path.realpath(image_folder))  # what a parser opening the folder now gets
            try:
                seen = {k: v for k, v in tree(root).items() if k not in local_only}
            except FileNotFoundError:  # pruned two switches later: no real parser is that slow
                continue
            if seen not in (expected["A"], expected["B"]):
                problems.append(f"mixed or partial tree: {len(seen)} files, {sorted(set(seen.values()))}")
            next(snapshots)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        for generation in "ABAB":
            bucket.deploy(tmp_path / generation, generation)
            result = run_sync(bucket, image_folder)
            assert result.returncode == 0, result.stderr
    finally:
        stop.set()
        thread.join(10)
    assert not problems, problems[:3]
    assert next(snapshots) > 5


def test_state_file_records_content_hashes(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source)
    assert run_sync(bucket, image_folder).returncode == 0
    state = json.loads((image_folder.parent / ".dags.releases" / "state.json").read_text())
    assert state["files"]["source_a.py"]["md5"] == hashlib.md5(b"A = 1\n").hexdigest()
    assert state["release"] == Path(os.readlink(image_folder)).name


def test_noop_sync_downloads_nothing(bucket, image_folder):
    # Its speed is measured against aws s3 sync by bench/dags_sync.py, not asserted here.
    for i in range(200):
        bucket.put(f"dag_{i}.py", f"N = {i}\n")
    assert run_sync(bucket, image_folder).returncode == 0
    result = run_sync(bucket, image_folder)
    assert result.returncode == 0 and "unchanged 200" in result.stdout


def test_file_removed_by_hand_from_the_release_is_restored_by_the_next_change(bucket, image_folder, tmp_path):
    source = write_tree(tmp_path / "src", SOURCE)
    bucket.deploy(source)
    assert run_sync(bucket, image_folder).returncode == 0
    (image_folder / "qfdmo/feeds/client.py").unlink()
    write_tree(source, {"source_a.py": "A = 3\n"})
    bucket.deploy(source, "deploy-2")

    result = run_sync(bucket, image_folder)

    assert result.returncode == 0, result.stderr
    assert tree(image_folder)["qfdmo/feeds/client.py"] == SOURCE["qfdmo/feeds/client.py"]
    assert "changed 2" in result.stdout


@pytest.fixture(scope="module")
def authenticating_s3(tmp_path_factory):
    """A moto server that checks SigV4 signatures and IAM keys (the shared one accepts anything)."""
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    # The first 3 requests (user, policy, key) are let through; every later one is authenticated.
    server = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="boot",
            aws_secret_access_key="boot",
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                iam.create_user(UserName="dags-sync")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="dags-sync", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="dags-sync")["AccessKey"]
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)


def test_requests_are_signed_correctly(authenticating_s3, tmp_path):
    import boto3

    endpoint, key_id, secret = authenticating_s3
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id, aws_secret_access_key=secret
    )
    name = "signed"
    client.create_bucket(Bucket=name)
    names = ["a.py", "pkg/é t+x.py", "pkg/with space/b.py", "pkg/~tilde=1&x.py"]
    for rel in names:
        client.put_object(Bucket=name, Key=f"dags/{rel}", Body=rel.encode())
    folder = tmp_path / "dags"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELLAR_", "DAGS_"))},
        "ENVIRONMENT": "preprod",
        "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
        "CELLAR_ADDON_HOST": endpoint,
        "CELLAR_ADDON_KEY_ID": key_id,
        "CELLAR_ADDON_KEY_SECRET": secret,
        "CELLAR_ADDON_BUCKET": f"{name}/dags",
        "DAGS_SYNC_PYTHON": str(VENV_PYTHON),
    }

    result = subprocess.run([str(SYNC)], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert tree(folder) == {rel: rel for rel in names}

    wrong = subprocess.run(
        [str(SYNC)],
        env={**env, "CELLAR_ADDON_KEY_SECRET": "not-the-secret"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 1 and "SignatureDoesNotMatch" in wrong.stderr
    for output in (result.stdout + result.stderr, wrong.stdout + wrong.stderr):
        assert key_id not in output and secret not in output


def test_first_run_converts_a_directory_that_cannot_be_renamed(bucket, image_folder, monkeypatch, capsys):
    """On overlayfs a directory of a lower image layer cannot be renamed (EXDEV): convert by copy."""
    import errno
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from dags_delivery import releases, sync
        from dags_delivery.settings import SyncSettings
    finally:
        sys.path.remove(str(REPO / "scripts"))
    bucket.put("a.py", "A = 1\n")
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if Path(src) == image_folder:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(releases, "_renameat2_exchange", lambda src, dst: False)
    monkeypatch.setattr(releases.os, "rename", rename)
    settings = SyncSettings.from_env(sync_env(bucket, image_folder))

    summary = sync.sync(settings)

    assert summary.added == ["a.py"] and summary.deleted == ["baked_in_old.py"]
    assert image_folder.is_symlink()
    assert tree(image_folder) == {
        "a.py": "A = 1\n",
        "download_dags.py": "# the image's download DAG\n",
        ".env": "LOCAL_ONLY=1\n",
        ".env.template": "LOCAL_ONLY=\n",
    }
    assert "converted by copy" in capsys.readouterr().err
    initial = [p for p in (image_folder.parent / ".dags.releases").iterdir() if p.name.endswith("-initial")]
    assert len(initial) == 1 and (initial[0] / "baked_in_old.py").exists()


def test_a_second_sync_while_one_runs_exits_75(bucket, image_folder):
    import fcntl

    bucket.put("a.py", "A = 1\n")
    assert run_sync(bucket, image_folder).returncode == 0
    lock = os.open(image_folder.parent / ".dags.releases" / "lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_sync(bucket, image_folder)
    finally:
        os.close(lock)
    assert result.returncode == 75 and "another sync is running" in result.stderr


def test_multipart_objects_whose_etag_is_not_an_md5(bucket, image_folder, tmp_path):
    """Without manifest, a multipart object is verified by its md5 metadata, then tracked by ETag."""
    from boto3.s3.transfer import TransferConfig

    big = tmp_path / "big_module.py"
    big.write_bytes(b"# padding\n" * 600_000)  # 6 MB: two parts of 5 MB
    md5 = hashlib.md5(big.read_bytes()).hexdigest()
    bucket.client.upload_file(
        str(big),
        bucket.name,
        f"{bucket.prefix}pkg/big_module.py",
        ExtraArgs={"Metadata": {"md5": md5}},
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    etag = bucket.client.head_object(Bucket=bucket.name, Key=f"{bucket.prefix}pkg/big_module.py")["ETag"]
    assert "-" in etag  # a multipart ETag, not an MD5

    first = run_sync(bucket, image_folder)
    assert first.returncode == 0, first.stderr
    assert hashlib.md5((image_folder / "pkg/big_module.py").read_bytes()).hexdigest() == md5
    again = run_sync(bucket, image_folder)
    assert again.returncode == 0 and "added 0, changed 0, deleted 0, unchanged 1" in again.stdout

    # A multipart object whose md5 metadata disagrees with its content is never published.
    bucket.client.upload_file(
        str(big),
        bucket.name,
        f"{bucket.prefix}pkg/other.py",
        ExtraArgs={"Metadata": {"md5": "0" * 32}},
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    bad = run_sync(bucket, image_folder, DAGS_SYNC_MANIFEST_RETRIES="0")
    assert bad.returncode == 75 and "does not match its MD5" in bad.stderr
    assert not (image_folder / "pkg/other.py").exists()
