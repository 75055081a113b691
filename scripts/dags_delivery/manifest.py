"""The deploy manifest: written LAST by a deploy, it names the exact files of that deploy.

``.deploy-manifest.json``: ``{"format": 1, "deploy_id": ..., "created_at": ..., "files": {key:
{"md5", "etag", "size"}}}``. A sync publishes exactly these files, and only once every object has
the ETag the manifest records; anything else means a deploy is uploading right now.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from .errors import DeployInProgress, SyncError
from .keys import MANIFEST_NAME, clean_etag
from .s3 import RemoteObject, error_code, read_object

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ManifestEntry:
    md5: str
    etag: str
    size: int


@dataclass(frozen=True)
class Manifest:
    deploy_id: str
    files: dict[str, ManifestEntry]
    etag: str  # of the manifest object itself: an unchanged manifest is not read again
    raw: dict[str, Any]  # as stored, kept in the sync's state file


def parse_manifest(raw: bytes) -> tuple[str, dict[str, ManifestEntry]]:
    """(deploy id, files) of a manifest written by a deploy."""
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


def build_manifest(deploy_id: str, files: dict[str, ManifestEntry]) -> bytes:
    document = {
        "format": MANIFEST_FORMAT,
        "deploy_id": deploy_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {rel: {"md5": e.md5, "etag": e.etag, "size": e.size} for rel, e in sorted(files.items())},
    }
    return json.dumps(document, indent=1).encode()


def read_manifest(
    client: Any,
    bucket: str,
    prefix: str,
    listed: RemoteObject,
    known: tuple[str, dict[str, Any]] | None,
    limit: int,
) -> Manifest:
    """The manifest the listing shows; `known` (etag, raw) spares the GET when it did not change."""
    if known is not None and known[0] == listed.etag:
        raw = known[1]
    else:
        try:
            body = read_object(client, bucket, prefix + MANIFEST_NAME, limit)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                raise DeployInProgress("deploy in progress: the manifest changed during the sync") from exc
            raise
        if body.etag != listed.etag:
            raise DeployInProgress("deploy in progress: the manifest changed during the sync")
        try:
            raw = json.loads(body.data)
        except ValueError as exc:
            raise SyncError(f"unreadable deploy manifest {MANIFEST_NAME}: {exc}") from exc
    deploy_id, files = parse_manifest(json.dumps(raw).encode())
    return Manifest(deploy_id, files, listed.etag, raw)
