"""One sync: mirror the DAG bucket into AIRFLOW__CORE__DAGS_FOLDER, atomically.

A sync lists the bucket (one call per 1,000 keys) and compares ETags with the state file, so a
no-op sync downloads nothing and writes nothing. Otherwise it builds a new release beside the
current one: unchanged files are hard-linked, changed ones downloaded and their MD5 verified,
protected local files (this DAG, .env...) carried over; then the symlink is switched in one
rename(2). The dag-processor therefore only ever sees a complete tree.

With a deploy manifest, the sync publishes exactly the files it names and only if every object
matches it; a mismatch means a deploy is uploading right now: the current tree is kept, the sync
retries briefly and then exits with EXIT_DEPLOY_IN_PROGRESS (the next run catches up).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .errors import EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, DeployInProgress, SyncError
from .keys import MANIFEST_NAME, is_skipped, key_problem, md5_bytes, md5_file, plain_md5, walk_files
from .manifest import Manifest, read_manifest
from .releases import (
    STATE_FORMAT,
    Layout,
    link_or_copy,
    load_state,
    lock,
    new_release_name,
    prune_releases,
    switch_symlink,
    write_state,
)
from .s3 import RemoteObject, describe_s3_error, error_code, list_objects, make_client, read_object, scrub
from .settings import SyncSettings, sync_secrets


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Remote:
    """What the bucket holds now: its listing and the manifest it shows, if any."""

    listing: dict[str, RemoteObject]
    manifest: Manifest | None


def read_remote(client: Any, settings: SyncSettings, state: dict[str, Any] | None) -> Remote:
    listing = list_objects(client, settings.bucket, settings.prefix)
    listed = listing.get(MANIFEST_NAME)
    if listed is None:
        return Remote(listing, None)
    known = (state.get("manifest_etag", ""), state["manifest_raw"]) if state and state.get("manifest_raw") else None
    manifest = read_manifest(client, settings.bucket, settings.prefix, listed, known, settings.max_object_bytes)
    return Remote(listing, manifest)


def desired_files(settings: SyncSettings, remote: Remote, summary: Summary) -> dict[str, Expected]:
    """What the new tree must contain; raises DeployInProgress when bucket and manifest disagree."""
    desired: dict[str, Expected] = {}
    manifest = remote.manifest.files if remote.manifest is not None else None
    names = manifest.keys() if manifest is not None else remote.listing.keys()
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
        listed = remote.listing.get(rel)
        if manifest is not None:
            entry = manifest[rel]
            recorded_etag = entry.etag or entry.md5
            if listed is None or listed.etag.lower() != recorded_etag.lower():
                mismatched.append(rel)
                continue
            expected = Expected(listed.etag, listed.size, entry.md5)
        else:
            assert listed is not None
            expected = Expected(listed.etag, listed.size, plain_md5(listed.etag))
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


def fetch(client: Any, settings: SyncSettings, rel: str, expected: Expected, dest: Path) -> str:
    """Download one object into dest, verify its content; returns its MD5."""
    try:
        body = read_object(client, settings.bucket, settings.prefix + rel, settings.max_object_bytes + 1)
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "PreconditionFailed"):
            raise DeployInProgress(f"deploy in progress: {rel} vanished during the sync") from exc
        raise
    if body.etag.lower() != expected.etag.lower():
        raise DeployInProgress(f"deploy in progress: {rel} changed during the sync")
    if len(body.data) > settings.max_object_bytes:
        raise SyncError(f"{rel} is larger than the limit of {settings.max_object_bytes} bytes")
    digest = md5_bytes(body.data)
    wanted = expected.md5 or body.md5_metadata
    if wanted and digest != wanted.lower():
        raise DeployInProgress(f"deploy in progress: {rel} content does not match its MD5")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as handle:
        handle.write(body.data)
    return digest


def sync(settings: SyncSettings, out: TextIO = sys.stdout) -> Summary:
    """One sync; raises SyncError on failure (the current tree is then left untouched)."""
    layout = Layout(settings.dags_folder, settings.releases_dir)
    layout.releases_dir.mkdir(parents=True, exist_ok=True)
    held = lock(layout)
    try:
        return _sync_locked(settings, layout, out)
    finally:
        os.close(held)


def _read_consistent_remote(
    client: Any, settings: SyncSettings, state: dict[str, Any] | None, out: TextIO
) -> tuple[Remote, dict[str, Expected], Summary]:
    """Listing + manifest that agree, retried a few times while a deploy uploads."""
    attempt = 0
    while True:
        summary = Summary()
        try:
            remote = read_remote(client, settings, state)
            return remote, desired_files(settings, remote, summary), summary
        except DeployInProgress as exc:
            if attempt >= settings.manifest_retries:
                raise
            attempt += 1
            print(
                f"dags sync: {exc}; retry {attempt}/{settings.manifest_retries} in {settings.manifest_retry_wait:g} s",
                file=out,
            )
            time.sleep(settings.manifest_retry_wait)


def _known_files(settings: SyncSettings, layout: Layout, state: dict[str, Any] | None) -> dict[str, dict[str, str]]:
    """What the current tree holds: from the state when it describes it, else by hashing it."""
    if state is not None:
        files: dict[str, dict[str, str]] = state["files"]
        return files
    if not layout.dags_folder.is_dir():
        return {}
    return {
        rel: {"etag": "", "md5": md5_file(layout.dags_folder / rel)}
        for rel in walk_files(layout.dags_folder)
        if rel not in settings.protected and not is_skipped(rel) and key_problem(rel) is None
    }


def _sync_locked(settings: SyncSettings, layout: Layout, out: TextIO) -> Summary:
    current = layout.current_release()
    state = load_state(layout, settings.source, current)
    client = make_client(settings.endpoint_url, settings.key_id, settings.secret, settings.workers, settings.region)
    remote, desired, summary = _read_consistent_remote(client, settings, state, out)
    manifest = remote.manifest
    summary.deploy_id = manifest.deploy_id if manifest else None
    manifest_etag = manifest.etag if manifest else None
    manifest_raw = manifest.raw if manifest else None

    known = _known_files(settings, layout, state)
    to_fetch: dict[str, Expected] = {}
    reused: dict[str, dict[str, str]] = {}
    for rel, expected in desired.items():
        record = known.get(rel)
        if record is not None and (
            (record["etag"] and record["etag"] == expected.etag)
            or (expected.md5 is not None and record["md5"] == expected.md5)
        ):
            reused[rel] = {"etag": expected.etag, "md5": record["md5"]}
        else:
            to_fetch[rel] = expected
            (summary.changed if rel in known else summary.added).append(rel)
    summary.deleted = sorted(set(known) - set(desired))
    summary.unchanged = len(reused)

    if state is not None and not to_fetch and not summary.deleted:
        if state.get("manifest_etag") != manifest_etag:
            state.update(manifest_etag=manifest_etag, manifest_raw=manifest_raw, deploy_id=summary.deploy_id)
            write_state(layout, state)
        summary.release = current
        return summary

    release = new_release_name()
    files = _build_release(client, settings, layout, release, desired, reused, to_fetch, summary)
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
            "deploy_id": summary.deploy_id,
            "manifest_etag": manifest_etag,
            "manifest_raw": manifest_raw,
            "files": files,
        },
    )
    prune_releases(layout, [release] + ([previous] if previous else []))
    summary.release = release
    return summary


def _build_release(
    client: Any,
    settings: SyncSettings,
    layout: Layout,
    release: str,
    desired: dict[str, Expected],
    reused: dict[str, dict[str, str]],
    to_fetch: dict[str, Expected],
    summary: Summary,
) -> dict[str, dict[str, str]]:
    """The new release directory, complete (or nothing at all); returns its files' etag/md5."""
    building = layout.releases_dir / f"{release}.partial"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    current_dir = layout.dags_folder if layout.dags_folder.is_dir() else None
    try:
        files: dict[str, dict[str, str]] = dict(reused)
        if current_dir is not None:
            for rel in list(reused):
                try:
                    link_or_copy(current_dir / rel, building / rel)
                except FileNotFoundError:  # removed by hand from the release: download it again
                    del files[rel]
                    to_fetch[rel] = desired[rel]
                    summary.unchanged -= 1
                    summary.changed.append(rel)
            for rel in settings.protected:
                if (current_dir / rel).is_file():
                    link_or_copy(current_dir / rel, building / rel)
        if to_fetch:
            with ThreadPoolExecutor(max_workers=min(settings.workers, len(to_fetch))) as pool:
                futures = {
                    rel: pool.submit(fetch, client, settings, rel, expected, building / rel)
                    for rel, expected in to_fetch.items()
                }
                for rel, future in futures.items():
                    files[rel] = {"etag": to_fetch[rel].etag, "md5": future.result()}
        os.rename(building, layout.releases_dir / release)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return files


def _names(items: list[str], limit: int = 10) -> str:
    return ", ".join(items[:limit]) + (f" (+{len(items) - limit})" if len(items) > limit else "")


def print_summary(summary: Summary, settings: SyncSettings, elapsed: float, out: TextIO) -> None:
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
    secrets = sync_secrets(env)  # scrubbed from every message, even when the settings are invalid
    try:
        settings = SyncSettings.from_env(env)
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
