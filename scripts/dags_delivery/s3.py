"""Every S3 call of the delivery, through one botocore client; error messages safe to print.

The client is built for S3-compatible stores (Cellar, MinIO, moto): path-style addressing, no
CRC checksums (which many of them reject), a few retries in botocore's standard mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import EXIT_CONFIG, SyncError
from .keys import clean_etag

DEFAULT_CELLAR_HOST = "cellar-c2.services.clever-cloud.com"
DEFAULT_REGION = "us-east-1"


def endpoint_from_host(host: str) -> str:
    """Cellar gives a bare host name; tests and other stores give a full URL."""
    host = host.strip().rstrip("/")
    if not host:
        raise SyncError("S3 endpoint host is empty", EXIT_CONFIG)
    return host if "://" in host else f"https://{host}"


def normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().strip("/")
    return f"{prefix}/" if prefix else ""


def make_client(endpoint_url: str, key_id: str | None, secret: str | None, workers: int, region: str) -> Any:
    """An S3 client; without a key pair, botocore's usual credential chain (environment, profile...)."""
    import logging

    # botocore logs nothing we need, and its debug output would carry the Authorization header.
    logging.getLogger().addHandler(logging.NullHandler())
    import botocore.session
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
    session = botocore.session.Session()
    # Timestamps (LastModified...) stay strings: nothing here reads them, and parsing the 1,000
    # dates of a listing page is most of what botocore spends on a no-op sync's listing (the AWS
    # CLI turns the parser off the same way). See bench/dags_sync.py.
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
    return session.create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=config,
    )


@dataclass(frozen=True)
class RemoteObject:
    etag: str
    size: int


def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every key under the prefix (relative to it) with its ETag and size: one call per 1,000 keys."""
    objects: dict[str, RemoteObject] = {}
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
    while True:
        page = client.list_objects_v2(**kwargs)
        for item in page.get("Contents", ()):
            objects[item["Key"][len(prefix) :]] = RemoteObject(clean_etag(item.get("ETag")), int(item["Size"]))
        if not page.get("IsTruncated"):
            return objects
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


@dataclass(frozen=True)
class ObjectBody:
    etag: str
    md5_metadata: str | None  # the `md5` metadata deploy_dags.py sets on every object
    data: bytes  # at most the limit asked for, plus nothing


def read_object(client: Any, bucket: str, key: str, limit: int) -> ObjectBody:
    """One object's ETag, md5 metadata and at most `limit` bytes of its body."""
    response = client.get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        data = body.read(limit)
    finally:
        body.close()
    return ObjectBody(clean_etag(response.get("ETag")), (response.get("Metadata") or {}).get("md5"), data)


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ("NoSuchKey"...), "" for anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def describe_s3_error(exc: BaseException) -> str:
    """A one-line description of a botocore failure (to be scrubbed before printing)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"{error.get('Code', 'Error')} (HTTP {status}): {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Remove credentials from a message (some stores quote the access key id in their errors)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
