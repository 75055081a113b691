"""Upload dags/ to the environment's DAG bucket, then write the deploy manifest LAST.

Used by the GitHub workflows (scripts/deploy_dags.sh) and runnable by hand against any S3 endpoint.

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

Environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or any boto3 credential source),
DAGS_BUCKET ("bucket", "bucket/prefix" or "s3://bucket/prefix"), DAGS_S3_PREFIX,
S3_ENDPOINT_URL (bare host or URL; default the Cellar host), DAGS_SOURCE_DIR (default ./dags),
DEPLOY_ID (default GITHUB_SHA or a timestamp).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dags_sync import (
    DEFAULT_CELLAR_HOST,
    DEFAULT_PROTECTED,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SKIPPED_DIR_NAMES,
    describe_s3_error,
    endpoint_from_host,
    is_skipped,
    key_problem,
    list_objects,
    make_client,
    normalise_prefix,
    parse_manifest,
    plain_md5,
    scrub,
)

# Never shipped: local-only files and what only tests and caches need.
EXCLUDED_NAMES = frozenset(DEFAULT_PROTECTED) | {".DS_Store"}
EXCLUDED_DIRS = frozenset(SKIPPED_DIR_NAMES) | {"tests", "dags_unit_tests", ".git", ".pytest_cache", ".ruff_cache"}


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


def deploy(client: Any, bucket: str, prefix: str, source: Path, deploy_id: str, workers: int, dry_run: bool) -> dict:
    files = local_files(source)
    if not files:
        raise SystemExit(f"deploy: nothing to ship in {source}")
    remote = list_objects(client, bucket, prefix)
    previous: dict = {}
    if MANIFEST_NAME in remote:
        body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
        try:
            previous = parse_manifest(body)[1]
        except Exception:  # a broken manifest is simply rewritten
            previous = {}

    entries: dict[str, dict[str, Any]] = {}
    to_upload: list[tuple[str, bytes, str]] = []
    for rel, path in files.items():
        data = path.read_bytes()
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        current = remote.get(rel)
        known = previous.get(rel)
        # The object is unchanged when its ETag is our MD5 or the ETag the previous manifest recorded
        # for the same MD5 (stores whose ETags are not MD5s: multipart, SSE-KMS).
        if current and (plain_md5(current.etag) == md5 or (known and known.md5 == md5 and known.etag == current.etag)):
            entries[rel] = {"md5": md5, "etag": current.etag, "size": len(data)}
        else:
            to_upload.append((rel, data, md5))

    def upload(item: tuple[str, bytes, str]) -> tuple[str, dict[str, Any]]:
        rel, data, md5 = item
        response = client.put_object(
            Bucket=bucket,
            Key=prefix + rel,
            Body=data,
            ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
            Metadata={"md5": md5},
        )
        return rel, {"md5": md5, "etag": response["ETag"].strip('"'), "size": len(data)}

    if not dry_run and to_upload:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            entries.update(pool.map(upload, to_upload))

    stale = sorted(rel for rel in remote if rel not in files and rel != MANIFEST_NAME)
    manifest = {
        "format": MANIFEST_FORMAT,
        "deploy_id": deploy_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": dict(sorted(entries.items())),
    }
    if not dry_run:
        client.put_object(
            Bucket=bucket,
            Key=prefix + MANIFEST_NAME,
            Body=json.dumps(manifest, indent=1).encode(),
            ContentType="application/json",
        )
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": prefix + rel} for rel in batch], "Quiet": True}
            )
    return {"uploaded": [rel for rel, _, _ in to_upload], "unchanged": len(files) - len(to_upload), "deleted": stale}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(description="Upload dags/ to the DAG bucket and write the deploy manifest last.")
    parser.add_argument("--source", default=env.get("DAGS_SOURCE_DIR") or "dags", help="folder to ship (./dags)")
    parser.add_argument("--bucket", default=env.get("DAGS_BUCKET"), help="bucket[/prefix] or s3://bucket/prefix")
    parser.add_argument("--prefix", default=env.get("DAGS_S3_PREFIX", ""))
    parser.add_argument("--endpoint", default=env.get("S3_ENDPOINT_URL") or DEFAULT_CELLAR_HOST)
    parser.add_argument("--deploy-id", default=env.get("DEPLOY_ID") or env.get("GITHUB_SHA") or "")
    parser.add_argument("--dry-run", action="store_true", help="compare and report, change nothing")
    args = parser.parse_args(argv)
    if not args.bucket:
        parser.error("DAGS_BUCKET (or --bucket) is required")
    secrets = (env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", ""))
    bucket, prefix = parse_bucket(args.bucket, args.prefix)
    source = Path(args.source)
    deploy_id = args.deploy_id or time.strftime("manual-%Y%m%dT%H%M%SZ", time.gmtime())
    started = time.monotonic()
    try:
        endpoint = endpoint_from_host(args.endpoint)
        client = make_client(endpoint, None, None, 16, env.get("AWS_DEFAULT_REGION") or "us-east-1")
        result = deploy(client, bucket, prefix, source, deploy_id, 16, args.dry_run)
    except SystemExit:
        raise
    except Exception as exc:
        print(f"deploy: FAILED: {scrub(describe_s3_error(exc), secrets)}", file=sys.stderr)
        return 1
    verb = "would upload" if args.dry_run else "uploaded"
    for rel in result["uploaded"]:
        print(f"deploy: {verb} {rel}")
    for rel in result["deleted"]:
        print(f"deploy: {'would delete' if args.dry_run else 'deleted'} {rel}")
    print(
        f"deploy: {deploy_id} -> {endpoint} s3://{bucket}/{prefix}: {verb} {len(result['uploaded'])}, "
        f"unchanged {result['unchanged']}, deleted {len(result['deleted'])} in {time.monotonic() - started:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
