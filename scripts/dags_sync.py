"""Mirror the DAG bucket (S3 / CleverCloud Cellar) into AIRFLOW__CORE__DAGS_FOLDER, atomically.

Called by ``sync_dags.sh`` (itself run by the DAG ``download_dags_from_s3``). Also home of the
helpers shared with ``scripts/deploy_dags.py`` (client, key checks, secret scrubbing, manifest).

Layout on disk, for DAGS_FOLDER=/opt/airflow/dags::

    /opt/airflow/dags -> .dags.releases/<release>      (symlink, replaced with rename(2))
    /opt/airflow/.dags.releases/<release>/...          current tree
    /opt/airflow/.dags.releases/<previous>/...         kept for rollback, older ones pruned
    /opt/airflow/.dags.releases/state.json             key -> etag/md5 of the current release

A sync lists the bucket (one call per 1,000 keys) and compares ETags with state.json, so a no-op
sync downloads nothing and writes nothing. Otherwise it builds a new release beside the current
one: unchanged files are hard-linked, changed ones downloaded and their MD5 verified, local-only
files (this DAG, .env...) carried over; then the symlink is switched in one rename(2). The
dag-processor therefore only ever sees a complete tree.

When the deploy manifest (``.deploy-manifest.json``, written LAST by deploy_dags.py) exists, the
sync publishes exactly the files it names and only if every object matches the MD5/ETag the
manifest records. A mismatch means a deploy is uploading right now: the current tree is kept,
the sync retries briefly and then exits with EXIT_DEPLOY_IN_PROGRESS (the next run catches up).

Exit codes: 0 ok, 1 S3 or disk failure (last good tree kept), 2 configuration error,
3 some keys refused (the rest was published), 75 deploy in progress or another sync running.

Speed: heavy imports are deferred; the listing, the manifest and small change sets go through
SignedS3 (botocore's SigV4 signer, standard-library HTTP and XML), and only bulk downloads build a
boto3 client. A no-op sync of 1,000 files thus costs about half an `aws s3 sync` (bench/dags_sync.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST_NAME = ".deploy-manifest.json"
MANIFEST_FORMAT = 1
STATE_FORMAT = 1
# Files of the local image that a sync never overwrites nor deletes (relative to DAGS_FOLDER).
DEFAULT_PROTECTED = ("download_dags.py", ".env", ".env.template", "sync_dags.sh")
DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024
DEFAULT_CELLAR_HOST = "cellar-c2.services.clever-cloud.com"
# Directories never mirrored: Python caches are rebuilt locally, tests are not DAGs.
SKIPPED_DIR_NAMES = frozenset({"__pycache__"})

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_REFUSED = 3
EXIT_DEPLOY_IN_PROGRESS = 75

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class SyncError(Exception):
    """A failure with a message safe to print and the exit code to use."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DeployInProgress(SyncError):
    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_DEPLOY_IN_PROGRESS)


# --------------------------------------------------------------------------- shared helpers


def endpoint_from_host(host: str) -> str:
    """Cellar gives a bare host name; tests and other stores give a full URL."""
    host = host.strip().rstrip("/")
    if not host:
        raise SyncError("S3 endpoint host is empty", EXIT_CONFIG)
    return host if "://" in host else f"https://{host}"


def normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().strip("/")
    return f"{prefix}/" if prefix else ""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove credentials from a message (botocore errors may quote the access key id)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def key_problem(rel: str) -> str | None:
    """Why a key (relative to the prefix) may not become a file under DAGS_FOLDER, or None."""
    if not rel:
        return "empty name"
    if "\\" in rel:
        return "backslash in name"
    if "\x00" in rel or any(ord(c) < 32 for c in rel):
        return "control character in name"
    if rel.startswith("/"):
        return "absolute path"
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'..', '.' or empty path segment (would escape or alias the folder)"
    if re.match(r"^[A-Za-z]:", rel):
        return "drive letter"
    return None


def is_skipped(rel: str) -> bool:
    """Keys mirrored by nobody: directory markers, Python caches, the manifest itself."""
    if rel == MANIFEST_NAME or rel.endswith("/"):
        return True
    parts = PurePosixPath(rel).parts
    return any(part in SKIPPED_DIR_NAMES for part in parts[:-1]) or rel.endswith(".pyc")


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def plain_md5(etag: str | None) -> str | None:
    """The MD5 an ETag stands for, when it is one (not multipart, not SSE-KMS)."""
    if not etag:
        return None
    etag = etag.strip('"').lower()
    return etag if _MD5_RE.match(etag) else None


def clean_etag(etag: str | None) -> str:
    return (etag or "").strip('"')


def make_client(endpoint_url: str, key_id: str | None, secret: str | None, workers: int, region: str) -> Any:
    """A boto3 S3 client suited to S3-compatible stores (Cellar, MinIO, moto)."""
    # Recent botocore sends CRC checksums that many S3-compatible stores reject.
    os.environ.setdefault("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    os.environ.setdefault("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    import logging

    # botocore logs nothing we need, and its debug output would carry the Authorization header.
    logging.getLogger().addHandler(logging.NullHandler())
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max(10, workers),
        user_agent_extra="qfdmo-dags-sync",
    )
    session = boto3.session.Session(
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


@dataclass(frozen=True)
class RemoteObject:
    etag: str
    size: int


def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every key under the prefix (relative to it) with its ETag and size."""
    objects: dict[str, RemoteObject] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
    while True:
        page = client.list_objects_v2(**kwargs)
        for item in page.get("Contents", ()):
            objects[item["Key"][len(prefix) :]] = RemoteObject(clean_etag(item.get("ETag")), int(item["Size"]))
        if not page.get("IsTruncated"):
            return objects
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


class S3HttpError(Exception):
    """An S3 error answered to a signed request (code and message from the XML body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code} (HTTP {status}): {message}")
        self.response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}


class SignedS3:
    """S3 reads signed with botocore's SigV4 signer, sent with the standard library (urllib, ElementTree).

    Why: a no-op sync is one listing, and botocore's client costs several times the rest of the run
    (service model loading, then a pure-Python parse of 1,000 keys with date parsing); a small
    change set is a few GETs. Signing stays botocore's. Bulk downloads use the boto3 client (pooled
    keep-alive connections).
    """

    def __init__(self, endpoint_url: str, region: str, key_id: str, secret: str, bucket: str) -> None:
        import urllib.parse

        from botocore.auth import S3SigV4Auth
        from botocore.credentials import Credentials

        self._signer = S3SigV4Auth(Credentials(key_id, secret), "s3", region)
        self._bucket_url = f"{endpoint_url}/{urllib.parse.quote(bucket, safe='')}"

    def _signed(self, key: str = "", params: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """URL and headers (Authorization, x-amz-date, x-amz-content-sha256) of a signed GET."""
        import urllib.parse

        from botocore.awsrequest import AWSRequest

        url = f"{self._bucket_url}/{urllib.parse.quote(key, safe='/~')}" if key else self._bucket_url
        if params:
            url += "?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        request = AWSRequest(method="GET", url=url)
        self._signer.add_auth(request)
        return url, dict(request.headers.items())

    def list(self, prefix: str) -> dict[str, RemoteObject]:
        """Every key under the prefix (relative to it) with its ETag and size."""
        import xml.etree.ElementTree as ElementTree

        objects: dict[str, RemoteObject] = {}
        params = {"list-type": "2", "max-keys": "1000", "prefix": prefix}
        while True:
            _, body = _http_get(*self._signed(params=params))
            root = ElementTree.fromstring(body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for item in root.iter(f"{ns}Contents"):
                key = item.findtext(f"{ns}Key") or ""
                etag = clean_etag(item.findtext(f"{ns}ETag"))
                objects[key[len(prefix) :]] = RemoteObject(etag, int(item.findtext(f"{ns}Size") or 0))
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true":
                return objects
            params["continuation-token"] = root.findtext(f"{ns}NextContinuationToken") or ""

    def get(self, key: str, limit: int) -> tuple[str, str | None, bytes]:
        """(ETag, md5 metadata, at most limit bytes of the body) of one object."""
        headers, body = _http_get(*self._signed(key), limit)
        return clean_etag(headers.get("ETag")), headers.get("x-amz-meta-md5"), body


def _http_get(url: str, headers: dict[str, str], limit: int | None = None, attempts: int = 3) -> tuple[Any, bytes]:
    """GET with retries on connection errors and 5xx; S3 errors raised as S3HttpError."""
    import urllib.error
    import urllib.request
    import xml.etree.ElementTree as ElementTree

    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
                return response.headers, response.read() if limit is None else response.read(limit)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            if exc.code < 500 or attempt == attempts:
                try:
                    error = ElementTree.fromstring(body)
                    code, message = error.findtext("Code") or "", error.findtext("Message") or ""
                except ElementTree.ParseError:
                    code, message = "", str(exc.reason)
                raise S3HttpError(
                    exc.code, code or ("NoSuchKey" if exc.code == 404 else "HTTPError"), message
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                reason = getattr(exc, "reason", exc)
                raise SyncError(f"S3 endpoint unreachable: {reason}") from None
        time.sleep(0.3 * 3 ** (attempt - 1))
    raise AssertionError("unreachable")


def describe_s3_error(exc: BaseException) -> str:
    """A one-line description of a boto3/botocore failure (to be scrubbed before printing)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{error.get('Code', 'Error')} (HTTP {status}): {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


@dataclass(frozen=True)
class ManifestEntry:
    md5: str
    etag: str
    size: int


def parse_manifest(raw: bytes) -> tuple[str, dict[str, ManifestEntry]]:
    """(deploy id, files) of a manifest written by deploy_dags.py."""
    try:
        data = json.loads(raw)
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        files = {
            str(rel): ManifestEntry(str(entry["md5"]).lower(), clean_etag(entry.get("etag")), int(entry["size"]))
            for rel, entry in data["files"].items()
        }
        return str(data.get("deploy_id", "?")), files
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SyncError(f"unreadable deploy manifest {MANIFEST_NAME}: {exc}") from exc


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    dags_folder: Path
    endpoint_url: str
    key_id: str
    secret: str
    bucket: str
    prefix: str
    region: str = "us-east-1"
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    workers: int = 16
    protected: frozenset[str] = frozenset(DEFAULT_PROTECTED)
    manifest_retries: int = 3
    manifest_retry_wait: float = 5.0
    releases_dir: Path | None = None
    signed_get_max: int = 50

    @property
    def secrets(self) -> tuple[str, str]:
        return (self.key_id, self.secret)

    @property
    def source(self) -> str:
        return f"{self.endpoint_url}/{self.bucket}/{self.prefix}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise SyncError(f"{name} is not set", EXIT_CONFIG)
            return value

        def number(name: str, default: float) -> float:
            try:
                return float(env.get(name) or default)
            except ValueError as exc:
                raise SyncError(f"{name} must be a number", EXIT_CONFIG) from exc

        bucket = required("CELLAR_ADDON_BUCKET")
        prefix = env.get("DAGS_S3_PREFIX", "")
        if "/" in bucket:  # "bucket/prefix" is accepted too
            bucket, _, bucket_prefix = bucket.partition("/")
            prefix = prefix or bucket_prefix
        protected = env.get("DAGS_SYNC_PROTECTED")
        return cls(
            dags_folder=Path(os.path.abspath(os.path.expanduser(required("AIRFLOW__CORE__DAGS_FOLDER")))),
            endpoint_url=endpoint_from_host(required("CELLAR_ADDON_HOST")),
            key_id=required("CELLAR_ADDON_KEY_ID"),
            secret=required("CELLAR_ADDON_KEY_SECRET"),
            bucket=bucket,
            prefix=normalise_prefix(prefix),
            region=env.get("CELLAR_ADDON_REGION") or "us-east-1",
            max_object_bytes=int(number("DAGS_SYNC_MAX_OBJECT_BYTES", DEFAULT_MAX_OBJECT_BYTES)),
            workers=max(1, int(number("DAGS_SYNC_WORKERS", 16))),
            protected=frozenset(p.strip() for p in protected.split(",") if p.strip())
            if protected is not None
            else frozenset(DEFAULT_PROTECTED),
            manifest_retries=max(0, int(number("DAGS_SYNC_MANIFEST_RETRIES", 3))),
            manifest_retry_wait=number("DAGS_SYNC_MANIFEST_RETRY_WAIT", 5.0),
            signed_get_max=int(number("DAGS_SYNC_SIGNED_GET_MAX", 50)),
            releases_dir=Path(os.path.abspath(env["DAGS_SYNC_RELEASES_DIR"]))
            if env.get("DAGS_SYNC_RELEASES_DIR")
            else None,
        )


# --------------------------------------------------------------------------- local layout


@dataclass
class Layout:
    dags_folder: Path
    releases_override: Path | None = None

    @property
    def releases_dir(self) -> Path:
        """Beside DAGS_FOLDER by default (same filesystem: hard links and rename(2) work)."""
        if self.releases_override is not None:
            return self.releases_override
        return self.dags_folder.parent / f".{self.dags_folder.name}.releases"

    @property
    def state_path(self) -> Path:
        return self.releases_dir / "state.json"

    def link_target(self, release: str) -> str:
        # Relative when beside the folder, so the layout survives a move or a different mount path.
        if self.releases_dir.parent == self.dags_folder.parent:
            return f"{self.releases_dir.name}/{release}"
        return str(self.releases_dir / release)

    def current_release(self) -> str | None:
        """Name of the release DAGS_FOLDER points to, None when it is not our symlink."""
        if not self.dags_folder.is_symlink():
            return None
        target = Path(os.readlink(self.dags_folder))
        if not target.is_absolute():
            target = self.dags_folder.parent / target
        if os.path.abspath(target.parent) != os.path.abspath(self.releases_dir):
            return None
        return target.name if target.is_dir() else None


def load_state(layout: Layout, settings: Settings, release: str | None) -> dict[str, Any] | None:
    """The recorded state, only if it describes the release in place for the same source."""
    if release is None:
        return None
    try:
        state = json.loads(layout.state_path.read_bytes())
    except (OSError, ValueError):
        return None
    if state.get("format") != STATE_FORMAT or state.get("source") != settings.source or state.get("release") != release:
        return None
    return state


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    tmp = layout.state_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, separators=(",", ":")))
    os.replace(tmp, layout.state_path)


def walk_files(root: Path) -> Iterable[str]:
    """Relative POSIX paths of the regular files below root (following the root symlink)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIPPED_DIR_NAMES]
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            if not rel.endswith(".pyc"):
                yield rel


def _renameat2_exchange(src: Path, dst: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange)
    return result == 0


def switch_symlink(layout: Layout, release: str, initial_release: str) -> None:
    """Point DAGS_FOLDER at the release with one rename(2); a real directory becomes a release."""
    folder = layout.dags_folder
    tmp_link = folder.parent / f".{folder.name}.switch-{os.getpid()}"
    if tmp_link.is_symlink() or tmp_link.exists():
        tmp_link.unlink()
    os.symlink(layout.link_target(release), tmp_link)
    if folder.is_dir() and not folder.is_symlink():
        # First run: the image shipped a real directory. Swap it with the symlink atomically, then
        # keep it as the previous release (rollback target).
        if _renameat2_exchange(tmp_link, folder):
            import shutil

            shutil.move(tmp_link, layout.releases_dir / initial_release)
            return
        try:
            # No renameat2 (other kernel/filesystem): a window of microseconds without the folder.
            os.rename(folder, layout.releases_dir / initial_release)
        except OSError as exc:
            _replace_unmovable_directory(folder, layout.releases_dir / initial_release, exc)
    os.replace(tmp_link, folder)


def _replace_unmovable_directory(folder: Path, keep_as: Path, error: OSError) -> None:
    """Copy, then delete a DAG folder that cannot be renamed, so the symlink can take its place.

    Happens once, on the first sync: e.g. a directory of a lower image layer on overlayfs (rename
    gives EXDEV). Not atomic, which is why the images run a first sync before the dag-processor
    starts. A mount point cannot be deleted: that configuration is refused with a message.
    """
    import shutil

    if os.path.ismount(folder):
        raise SyncError(
            f"{folder} is a mount point: it cannot become a symlink to a release. Mount the volume on its "
            "parent (or elsewhere) and point AIRFLOW__CORE__DAGS_FOLDER below it.",
            EXIT_CONFIG,
        ) from error
    print(f"dags sync: first run, {folder} cannot be renamed ({error.strerror}): converted by copy", file=sys.stderr)
    shutil.copytree(folder, keep_as, symlinks=True)
    shutil.rmtree(folder)


def prune_releases(layout: Layout, keep: Iterable[str]) -> None:
    import shutil

    kept = set(keep)
    for entry in layout.releases_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name not in kept:
            shutil.rmtree(entry, ignore_errors=True)


def new_release_name() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{time.time_ns() % 1_000_000_000:09d}"


# --------------------------------------------------------------------------- sync


@dataclass
class Expected:
    etag: str
    size: int
    md5: str | None  # None: multipart object without recorded MD5, verified against metadata if any


@dataclass
class Summary:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    refused: list[str] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    deploy_id: str | None = None
    release: str | None = None


def _desired_files(
    settings: Settings, listing: dict[str, RemoteObject], manifest: dict[str, ManifestEntry] | None, summary: Summary
) -> dict[str, Expected]:
    """What the new tree must contain; raises DeployInProgress when bucket and manifest disagree."""
    desired: dict[str, Expected] = {}
    names = manifest.keys() if manifest is not None else listing.keys()
    mismatched: list[str] = []
    for rel in sorted(names):
        if is_skipped(rel):
            continue
        problem = key_problem(rel)
        if problem:
            summary.refused.append(f"{rel!r}: {problem}")
            continue
        if rel in settings.protected:
            summary.protected.append(rel)
            continue
        remote = listing.get(rel)
        if manifest is not None:
            entry = manifest[rel]
            recorded_etag = entry.etag or entry.md5
            if remote is None or remote.etag.lower() != recorded_etag.lower():
                mismatched.append(rel)
                continue
            expected = Expected(remote.etag, remote.size, entry.md5)
        else:
            assert remote is not None
            expected = Expected(remote.etag, remote.size, plain_md5(remote.etag))
        if expected.size > settings.max_object_bytes:
            summary.refused.append(f"{rel!r}: {expected.size} bytes > limit {settings.max_object_bytes}")
            continue
        desired[rel] = expected
    if mismatched:
        shown = ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else "")
        raise DeployInProgress(
            f"deploy in progress: {len(mismatched)} object(s) differ from the deploy manifest ({shown})"
        )
    return desired


def boto3_reader(client: Any, bucket: str) -> Any:
    """A reader (key, limit) -> (ETag, md5 metadata, body) over the boto3 client."""

    def read(key: str, limit: int) -> tuple[str, str | None, bytes]:
        response = client.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            data = body.read(limit)
        finally:
            body.close()
        return clean_etag(response.get("ETag")), (response.get("Metadata") or {}).get("md5"), data

    return read


def _fetch(read: Any, settings: Settings, rel: str, expected: Expected, dest: Path) -> str:
    """Download one object into dest, verify its content; returns its MD5."""
    try:
        etag, metadata_md5, data = read(settings.prefix + rel, settings.max_object_bytes + 1)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "PreconditionFailed"):
            raise DeployInProgress(f"deploy in progress: {rel} vanished during the sync") from exc
        raise
    if etag.lower() != expected.etag.lower():
        raise DeployInProgress(f"deploy in progress: {rel} changed during the sync")
    if len(data) > settings.max_object_bytes:
        raise SyncError(f"{rel} is larger than the limit of {settings.max_object_bytes} bytes")
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    wanted = expected.md5 or metadata_md5
    if wanted and digest != wanted.lower():
        raise DeployInProgress(f"deploy in progress: {rel} content does not match its MD5")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as handle:
        handle.write(data)
    return digest


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        import shutil

        shutil.copy2(src, dest)


def _read_listing_and_manifest(
    s3: SignedS3, settings: Settings, state: dict[str, Any] | None
) -> tuple[dict[str, RemoteObject], dict[str, ManifestEntry] | None, str | None, str | None, dict[str, Any] | None]:
    listing = s3.list(settings.prefix)
    manifest_obj = listing.get(MANIFEST_NAME)
    if manifest_obj is None:
        return listing, None, None, None, None
    if state and state.get("manifest_etag") == manifest_obj.etag and state.get("manifest_raw"):
        raw_json = state["manifest_raw"]
    else:
        try:
            etag, _, raw_bytes = s3.get(settings.prefix + MANIFEST_NAME, settings.max_object_bytes)
        except S3HttpError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise DeployInProgress("deploy in progress: the manifest changed during the sync") from exc
            raise
        if etag != manifest_obj.etag:
            raise DeployInProgress("deploy in progress: the manifest changed during the sync")
        try:
            raw_json = json.loads(raw_bytes)
        except ValueError as exc:
            raise SyncError(f"unreadable deploy manifest {MANIFEST_NAME}: {exc}") from exc
    deploy_id, files = parse_manifest(json.dumps(raw_json).encode())
    return listing, files, deploy_id, manifest_obj.etag, raw_json


def sync(settings: Settings, out: Any = sys.stdout) -> Summary:
    """One sync; raises SyncError on failure (the current tree is then left untouched)."""
    layout = Layout(settings.dags_folder, settings.releases_dir)
    layout.releases_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(layout)
    try:
        return _sync_locked(settings, layout, out)
    finally:
        os.close(lock)


def _lock(layout: Layout) -> int:
    import fcntl

    fd = os.open(layout.releases_dir / "lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise SyncError("another sync is running on this folder", EXIT_DEPLOY_IN_PROGRESS) from exc
    return fd


def _sync_locked(settings: Settings, layout: Layout, out: Any) -> Summary:
    current = layout.current_release()
    state = load_state(layout, settings, current)
    s3 = SignedS3(settings.endpoint_url, settings.region, settings.key_id, settings.secret, settings.bucket)

    attempt = 0
    while True:
        summary = Summary()
        try:
            listing, manifest, deploy_id, manifest_etag, manifest_raw = _read_listing_and_manifest(s3, settings, state)
            desired = _desired_files(settings, listing, manifest, summary)
            break
        except DeployInProgress as exc:
            if attempt >= settings.manifest_retries:
                raise
            attempt += 1
            print(
                f"dags sync: {exc}; retry {attempt}/{settings.manifest_retries} in {settings.manifest_retry_wait:g} s",
                file=out,
            )
            time.sleep(settings.manifest_retry_wait)
    summary.deploy_id = deploy_id

    # What the current tree holds: from the state when it describes it, else by hashing it.
    current_dir: Path | None = layout.dags_folder if layout.dags_folder.is_dir() else None
    if state is not None:
        known: dict[str, dict[str, str]] = state["files"]
    elif current_dir is not None:
        known = {
            rel: {"etag": "", "md5": md5_file(current_dir / rel)}
            for rel in walk_files(current_dir)
            if rel not in settings.protected and not is_skipped(rel) and key_problem(rel) is None
        }
    else:
        known = {}

    to_fetch: dict[str, Expected] = {}
    reused: dict[str, dict[str, str]] = {}
    for rel, expected in desired.items():
        record = known.get(rel)
        same = record is not None and (
            (record["etag"] and record["etag"] == expected.etag)
            or (expected.md5 is not None and record["md5"] == expected.md5)
        )
        if same:
            assert record is not None
            reused[rel] = {"etag": expected.etag, "md5": record["md5"]}
        else:
            to_fetch[rel] = expected
            (summary.changed if rel in known else summary.added).append(rel)
    summary.deleted = sorted(set(known) - set(desired))
    summary.unchanged = len(reused)

    if state is not None and not to_fetch and not summary.deleted:
        if state.get("manifest_etag") != manifest_etag:
            state.update(manifest_etag=manifest_etag, manifest_raw=manifest_raw, deploy_id=deploy_id)
            write_state(layout, state)
        summary.release = current
        return summary

    release = new_release_name()
    building = layout.releases_dir / f"{release}.partial"
    import shutil

    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        files: dict[str, dict[str, str]] = dict(reused)
        if current_dir is not None:
            for rel in list(reused):
                try:
                    _link_or_copy(current_dir / rel, building / rel)
                except FileNotFoundError:  # removed by hand from the release: download it again
                    del files[rel]
                    to_fetch[rel] = desired[rel]
                    summary.unchanged -= 1
                    summary.changed.append(rel)
            for rel in settings.protected:
                if (current_dir / rel).is_file():
                    _link_or_copy(current_dir / rel, building / rel)
        if to_fetch:
            from concurrent.futures import ThreadPoolExecutor

            # A few objects: pre-signed GETs, no client to build. Many: boto3's pooled connections.
            if len(to_fetch) <= settings.signed_get_max:
                read = s3.get
            else:
                client = make_client(
                    settings.endpoint_url, settings.key_id, settings.secret, settings.workers, settings.region
                )
                read = boto3_reader(client, settings.bucket)
            with ThreadPoolExecutor(max_workers=min(settings.workers, len(to_fetch))) as pool:
                futures = {
                    rel: pool.submit(_fetch, read, settings, rel, expected, building / rel)
                    for rel, expected in to_fetch.items()
                }
                for rel, future in futures.items():
                    files[rel] = {"etag": to_fetch[rel].etag, "md5": future.result()}
        os.rename(building, layout.releases_dir / release)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise

    initial = f"{new_release_name()}-initial"
    was_real_dir = current is None and layout.dags_folder.is_dir() and not layout.dags_folder.is_symlink()
    switch_symlink(layout, release, initial)
    previous = initial if was_real_dir else current
    write_state(
        layout,
        {
            "format": STATE_FORMAT,
            "source": settings.source,
            "release": release,
            "previous": previous,
            "deploy_id": deploy_id,
            "manifest_etag": manifest_etag,
            "manifest_raw": manifest_raw,
            "files": files,
        },
    )
    prune_releases(layout, [release] + ([previous] if previous else []))
    summary.release = release
    return summary


def _names(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit})" if len(items) > limit else "")


def print_summary(summary: Summary, settings: Settings, elapsed: float, out: Any) -> None:
    origin = f"s3://{settings.bucket}/{settings.prefix}"
    origin += f" (deploy {summary.deploy_id})" if summary.deploy_id else " (no deploy manifest: mirroring the listing)"
    print(f"dags sync: {origin} -> {settings.dags_folder}", file=out)
    for label, items in (("added", summary.added), ("changed", summary.changed), ("deleted", summary.deleted)):
        if items:
            print(f"dags sync: {label}: {_names(items)}", file=out)
    if summary.protected:
        print(f"dags sync: kept local (protected), bucket copy ignored: {_names(summary.protected)}", file=out)
    for refused in summary.refused:
        print(f"dags sync: REFUSED key {refused}", file=out)
    print(
        f"dags sync: added {len(summary.added)}, changed {len(summary.changed)}, deleted {len(summary.deleted)}, "
        f"unchanged {summary.unchanged}, refused {len(summary.refused)} in {elapsed:.2f} s"
        + (f" (release {summary.release})" if summary.release else ""),
        file=out,
    )


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    started = time.monotonic()
    secrets = (env.get("CELLAR_ADDON_KEY_ID", ""), env.get("CELLAR_ADDON_KEY_SECRET", ""))
    try:
        settings = Settings.from_env(env)
        summary = sync(settings)
    except SyncError as exc:
        print(f"dags sync: FAILED: {scrub(str(exc), secrets)} - the current DAG tree is unchanged", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # botocore, network, disk: the message is scrubbed, no traceback
        print(
            f"dags sync: FAILED: S3 or disk error: {scrub(describe_s3_error(exc), secrets)} "
            "- the current DAG tree is unchanged",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    print_summary(summary, settings, time.monotonic() - started, sys.stdout)
    if summary.refused:
        print(f"dags sync: {len(summary.refused)} key(s) refused, see above", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
