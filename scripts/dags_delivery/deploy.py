"""Upload dags/ to the environment's DAG bucket, then write the deploy manifest LAST.

Order, and why:
1. upload new and changed files (unchanged ones, same MD5 as the bucket, are skipped), each with
   its MD5 in the object metadata and Content-MD5 so the store rejects a corrupted body;
2. write ``.deploy-manifest.json`` (deploy id, key -> md5/etag/size): from then on syncs publish
   exactly this deploy;
3. delete the keys this deploy no longer has.

A sync that lists the bucket during step 1 sees objects that differ from the previous manifest and
keeps its current tree (deploy in progress). Deleting only after the manifest means a sync reading
the new manifest never misses a file, and one still holding the old manifest meets a missing key,
which it also treats as "deploy in progress": no sync ever publishes a mix of two deploys. If the
deploy dies between 2 and 3, the leftovers are ignored by syncs (not in the manifest) and removed
by the next deploy.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .keys import DEFAULT_PROTECTED, MANIFEST_NAME, SKIPPED_DIR_NAMES, is_skipped, key_problem, md5_bytes, plain_md5
from .manifest import ManifestEntry, build_manifest, parse_manifest
from .s3 import describe_s3_error, endpoint_from_host, list_objects, make_client, normalise_prefix, scrub
from .settings import DeployDefaults, manual_deploy_id

# Never shipped: local-only files and what only tests and caches need.
EXCLUDED_NAMES = frozenset(DEFAULT_PROTECTED) | {".DS_Store"}
EXCLUDED_DIRS = frozenset(SKIPPED_DIR_NAMES) | {"tests", "dags_unit_tests", ".git", ".pytest_cache", ".ruff_cache"}
WORKERS = 16


@dataclass
class DeployResult:
    uploaded: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)


def local_files(source: Path) -> dict[str, Path]:
    """Files to ship, by key relative to the prefix."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS)
        rel_dir = Path(dirpath).relative_to(source).as_posix()
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if name in EXCLUDED_NAMES or name.endswith(".pyc") or is_skipped(rel):
                continue
            problem = key_problem(rel)
            if problem:
                raise SystemExit(f"deploy: refusing to ship {rel!r}: {problem}")
            files[rel] = Path(dirpath) / name
    return files


def parse_bucket(value: str, prefix: str) -> tuple[str, str]:
    value = value.removeprefix("s3://").strip("/")
    bucket, _, bucket_prefix = value.partition("/")
    return bucket, normalise_prefix(prefix or bucket_prefix)


def _previous_manifest(client: Any, bucket: str, prefix: str) -> dict[str, ManifestEntry]:
    body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
    try:
        return parse_manifest(body)[1]
    except Exception:  # a broken manifest is simply rewritten
        return {}


def deploy(
    client: Any, bucket: str, prefix: str, source: Path, deploy_id: str, workers: int, dry_run: bool
) -> DeployResult:
    files = local_files(source)
    if not files:
        raise SystemExit(f"deploy: nothing to ship in {source}")
    remote = list_objects(client, bucket, prefix)
    previous = _previous_manifest(client, bucket, prefix) if MANIFEST_NAME in remote else {}

    entries: dict[str, ManifestEntry] = {}
    to_upload: list[tuple[str, bytes, str]] = []
    for rel, path in files.items():
        data = path.read_bytes()
        md5 = md5_bytes(data)
        current = remote.get(rel)
        known = previous.get(rel)
        # The object is unchanged when its ETag is our MD5 or the ETag the previous manifest recorded
        # for the same MD5 (stores whose ETags are not MD5s: multipart, SSE-KMS).
        if current and (plain_md5(current.etag) == md5 or (known and known.md5 == md5 and known.etag == current.etag)):
            entries[rel] = ManifestEntry(md5, current.etag, len(data))
        else:
            to_upload.append((rel, data, md5))

    def upload(item: tuple[str, bytes, str]) -> tuple[str, ManifestEntry]:
        rel, data, md5 = item
        response = client.put_object(
            Bucket=bucket,
            Key=prefix + rel,
            Body=data,
            ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
            Metadata={"md5": md5},
        )
        return rel, ManifestEntry(md5, response["ETag"].strip('"'), len(data))

    if not dry_run and to_upload:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            entries.update(pool.map(upload, to_upload))

    stale = sorted(rel for rel in remote if rel not in files and rel != MANIFEST_NAME)
    if not dry_run:
        client.put_object(
            Bucket=bucket,
            Key=prefix + MANIFEST_NAME,
            Body=build_manifest(deploy_id, entries),
            ContentType="application/json",
        )
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": prefix + rel} for rel in batch], "Quiet": True}
            )
    return DeployResult([rel for rel, _, _ in to_upload], len(files) - len(to_upload), stale)


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    defaults = DeployDefaults.from_env(os.environ if env is None else env)
    parser = argparse.ArgumentParser(description="Upload dags/ to the DAG bucket and write the deploy manifest last.")
    parser.add_argument("--source", default=defaults.source, help="folder to ship (./dags)")
    parser.add_argument("--bucket", default=defaults.bucket, help="bucket[/prefix] or s3://bucket/prefix")
    parser.add_argument("--prefix", default=defaults.prefix)
    parser.add_argument("--endpoint", default=defaults.endpoint)
    parser.add_argument("--deploy-id", default=defaults.deploy_id)
    parser.add_argument("--dry-run", action="store_true", help="compare and report, change nothing")
    args = parser.parse_args(argv)
    if not args.bucket:
        parser.error("DAGS_BUCKET (or --bucket) is required")
    bucket, prefix = parse_bucket(args.bucket, args.prefix)
    source = Path(args.source)
    deploy_id = args.deploy_id or manual_deploy_id()
    started = time.monotonic()
    try:
        endpoint = endpoint_from_host(args.endpoint)
        client = make_client(endpoint, None, None, WORKERS, defaults.region)
        result = deploy(client, bucket, prefix, source, deploy_id, WORKERS, args.dry_run)
    except SystemExit:
        raise
    except Exception as exc:
        print(f"deploy: FAILED: {scrub(describe_s3_error(exc), defaults.secrets)}", file=sys.stderr)
        return 1
    verb = "would upload" if args.dry_run else "uploaded"
    for rel in result.uploaded:
        print(f"deploy: {verb} {rel}")
    for rel in result.deleted:
        print(f"deploy: {'would delete' if args.dry_run else 'deleted'} {rel}")
    print(
        f"deploy: {deploy_id} -> {endpoint} s3://{bucket}/{prefix}: {verb} {len(result.uploaded)}, "
        f"unchanged {result.unchanged}, deleted {len(result.deleted)} in {time.monotonic() - started:.2f} s"
    )
    return 0
