"""The typed settings of a sync and of a deploy, read once from the environment.

Every variable is read here and nowhere else in the package; a bad value is a SyncError that
names the variable (exit code 2). ENVIRONMENT is not read here: sync_dags.sh decides from it
whether to sync at all, before Python starts (its vocabulary is qfdmo.settings.Environment's).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import EXIT_CONFIG, SyncError
from .keys import DEFAULT_PROTECTED
from .s3 import DEFAULT_CELLAR_HOST, DEFAULT_REGION, endpoint_from_host, normalise_prefix

DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024


class _Reader:
    """Typed reads of one environment mapping, each error naming its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str = "") -> str:
        return self.env.get(name, "").strip() or default

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            raise SyncError(f"{name} is not set", EXIT_CONFIG)
        return value

    def number(self, name: str, default: float) -> float:
        try:
            return float(self.env.get(name) or default)
        except ValueError as exc:
            raise SyncError(f"{name} must be a number", EXIT_CONFIG) from exc

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(os.path.abspath(os.path.expanduser(value))) if value else None


@dataclass(frozen=True)
class SyncSettings:
    dags_folder: Path
    endpoint_url: str
    key_id: str
    secret: str
    bucket: str
    prefix: str
    region: str = DEFAULT_REGION
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    workers: int = 16
    protected: frozenset[str] = frozenset(DEFAULT_PROTECTED)
    manifest_retries: int = 3
    manifest_retry_wait: float = 5.0
    releases_dir: Path | None = None

    @property
    def secrets(self) -> tuple[str, str]:
        return (self.key_id, self.secret)

    @property
    def source(self) -> str:
        return f"{self.endpoint_url}/{self.bucket}/{self.prefix}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SyncSettings:
        read = _Reader(env)
        bucket = read.required("CELLAR_ADDON_BUCKET")
        prefix = env.get("DAGS_S3_PREFIX", "")
        if "/" in bucket:  # "bucket/prefix" is accepted too
            bucket, _, bucket_prefix = bucket.partition("/")
            prefix = prefix or bucket_prefix
        protected = env.get("DAGS_SYNC_PROTECTED")
        dags_folder = read.path("AIRFLOW__CORE__DAGS_FOLDER")
        if dags_folder is None:
            raise SyncError("AIRFLOW__CORE__DAGS_FOLDER is not set", EXIT_CONFIG)
        return cls(
            dags_folder=dags_folder,
            endpoint_url=endpoint_from_host(read.required("CELLAR_ADDON_HOST")),
            key_id=read.required("CELLAR_ADDON_KEY_ID"),
            secret=read.required("CELLAR_ADDON_KEY_SECRET"),
            bucket=bucket,
            prefix=normalise_prefix(prefix),
            region=read.text("CELLAR_ADDON_REGION", DEFAULT_REGION),
            max_object_bytes=int(read.number("DAGS_SYNC_MAX_OBJECT_BYTES", DEFAULT_MAX_OBJECT_BYTES)),
            workers=max(1, int(read.number("DAGS_SYNC_WORKERS", 16))),
            protected=frozenset(p.strip() for p in protected.split(",") if p.strip())
            if protected is not None
            else frozenset(DEFAULT_PROTECTED),
            manifest_retries=max(0, int(read.number("DAGS_SYNC_MANIFEST_RETRIES", 3))),
            manifest_retry_wait=read.number("DAGS_SYNC_MANIFEST_RETRY_WAIT", 5.0),
            releases_dir=read.path("DAGS_SYNC_RELEASES_DIR"),
        )


def sync_secrets(env: Mapping[str, str]) -> tuple[str, str]:
    return (env.get("CELLAR_ADDON_KEY_ID", ""), env.get("CELLAR_ADDON_KEY_SECRET", ""))


@dataclass(frozen=True)
class DeployDefaults:
    """What a deploy takes from the environment; its command-line options override each."""

    source: str
    bucket: str
    prefix: str
    endpoint: str
    deploy_id: str
    region: str
    secrets: tuple[str, str]  # only to scrub them from messages: botocore reads the credentials itself

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeployDefaults:
        read = _Reader(env)
        return cls(
            source=read.text("DAGS_SOURCE_DIR", "dags"),
            bucket=read.text("DAGS_BUCKET"),
            prefix=env.get("DAGS_S3_PREFIX", ""),
            endpoint=read.text("S3_ENDPOINT_URL", DEFAULT_CELLAR_HOST),
            deploy_id=read.text("DEPLOY_ID") or read.text("GITHUB_SHA"),
            region=read.text("AWS_DEFAULT_REGION", DEFAULT_REGION),
            secrets=(env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")),
        )


def manual_deploy_id() -> str:
    return time.strftime("manual-%Y%m%dT%H%M%SZ", time.gmtime())
