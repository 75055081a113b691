"""Where the tasks of a source run hand each other the run's data, so that any task may run on any
machine (LocalExecutor or Celery workers alike).

    s3://<bucket>/<prefix>runs/<dag_id>/<run_id>/raw.jsonl.gz        the downloaded feed (download → normalise)
    s3://<bucket>/<prefix>runs/<dag_id>/<run_id>/nomenclature.json   SINOE's waste codes (download → check, normalise)
    s3://<bucket>/<prefix>runs/<dag_id>/<run_id>/normalised/*.tsv.gz a failed run's staged rows (cleanup, diagnosis)
    s3://<bucket>/<prefix>reports/<dag_id>/<run_id>.json             the run report (kept)

The normalised rows do not travel through S3: the normalise task COPYs them into the run's staging
tables (qfdmo_staging) itself, which is where the next task reads them. The local disk is only the
scratch of one task (`scratch_dir`).

`S3RunData` is what the DAGs use (the platform's S3: Cellar, MinIO, moto locally). `LocalRunData`
keeps a run in one directory, the layout of the single-machine platform: the benchmark's baseline and
tests that need no S3. Streams are gzip-compressed and streamed both ways (multipart upload from a
background thread, decompressed as downloaded): a run's feed is never whole in memory.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from qfdmo.pipeline.paths import safe_name
from qfdmo.settings import settings

RAW_FILE = "raw.jsonl"
NOMENCLATURE_FILE = "nomenclature.json"
NORMALISED_DIR = "normalised"
GZIP_SUFFIX = ".gz"  # what S3RunData.writer adds to a stream's object key


class RunData(Protocol):
    """The data of one run, wherever it lives."""

    @property
    def location(self) -> str:
        """Where it is, for people (logs, report) and for `S3RunStore.at` (retention sweep)."""
        ...

    def writer(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """Write the object `name`, streamed; it exists once the block ends without an error."""
        ...

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None:
        """A small object (None if absent)."""
        ...

    def local_copy(self, name: str, scratch: Path) -> Path:
        """A local file with the object's content (downloaded into `scratch`, or the object itself)."""
        ...

    def delete(self) -> int:
        """Remove every object of the run; the number removed."""
        ...


# --- S3 ---


class S3Upload:
    """A binary writer that streams to one S3 object, gzip-compressed (level 1: JSON and TSV shrink
    several times for little CPU, and the upload is what costs, README « Données d'un run »).

    The caller's bytes are handed over in chunks of CHUNK_SIZE to one background thread that
    compresses them (zlib releases the GIL) and uploads parts of PART_SIZE bytes, while the caller
    goes on (reading the feed); at most two chunks wait, so memory stays at a few chunks and parts.
    An object smaller than one part is a single PUT; `abort()` (or a failed close) leaves no object.
    """

    PART_SIZE = 8 << 20  # S3's minimum is 5 MiB for every part but the last
    CHUNK_SIZE = 4 << 20
    MAX_WAITING_CHUNKS = 2

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._raw = bytearray()
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing (zcat reads it)
        self._out = bytearray()  # compressed, not sent yet (background thread only)
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="s3-upload")
        self._waiting: deque[Future[None]] = deque()
        self.bytes = 0  # written by the caller, before compression

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._raw += data
        self.bytes += len(data)
        if len(self._raw) >= self.CHUNK_SIZE:
            self._hand_over(final=False)
        return len(data)

    def _hand_over(self, final: bool) -> None:
        chunk = bytes(self._raw)
        self._raw.clear()
        while len(self._waiting) >= self.MAX_WAITING_CHUNKS:
            self._waiting.popleft().result()
        self._waiting.append(self._pool.submit(self._absorb, chunk, final))

    def _absorb(self, chunk: bytes, final: bool) -> None:
        self._out += self._compressor.compress(chunk)
        if final:
            self._out += self._compressor.flush()
        while len(self._out) >= self.PART_SIZE:
            self._send_part(bytes(self._out[: self.PART_SIZE]))
            del self._out[: self.PART_SIZE]
        if not final:
            return
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._out))
        else:
            if self._out:
                self._send_part(bytes(self._out))
            self._client.complete_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                                   MultipartUpload={"Parts": self._parts})
        self._out.clear()

    def _send_part(self, body: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        answer = self._client.upload_part(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                                          PartNumber=number, Body=body)
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def close(self) -> None:
        try:
            self._hand_over(final=True)
            while self._waiting:
                self._waiting.popleft().result()
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        for future in self._waiting:
            future.cancel()
        self._pool.shutdown(wait=True)  # a part being sent ends first
        self._waiting.clear()
        if self._upload_id is not None:
            with contextlib.suppress(Exception):  # the caller's error is the one to report
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)


@dataclass(frozen=True)
class S3RunData:
    client: Any  # a boto3 S3 client (the Airflow connection's, through the Amazon provider's S3Hook)
    bucket: str
    prefix: str  # ends with '/'

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, name: str) -> str:
        return self.prefix + name

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        """Object `<name>.gz` (gzip): a stream is compressed on its way to S3, and back on local_copy."""
        upload = S3Upload(self.client, self.bucket, self._key(name) + GZIP_SUFFIX)
        try:
            yield upload  # type: ignore[misc]  # write() is all the callers use of BinaryIO
        except BaseException:
            upload.abort()
            raise
        upload.close()

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def get(self, name: str) -> bytes | None:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return body

    def local_copy(self, name: str, scratch: Path) -> Path:
        """The stream `name` (written by `writer`), decompressed into `scratch` as it arrives."""
        path = scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(name) + GZIP_SUFFIX)["Body"]
        decompressor = zlib.decompressobj(31)
        with path.open("wb") as out:
            for chunk in body.iter_chunks(1 << 20):
                out.write(decompressor.decompress(chunk))
            out.write(decompressor.flush())
        if not decompressor.eof:
            raise OSError(f"{self.location}{name}{GZIP_SUFFIX} is truncated")
        return path

    def delete(self) -> int:
        removed = 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                removed += len(keys)
        return removed


@dataclass(frozen=True)
class S3RunStore:
    """The platform's run-data bucket (`QFDMO_RUN_DATA_BUCKET`: `bucket` or `bucket/prefix`)."""

    client: Any
    bucket: str
    prefix: str = ""  # '' or ends with '/'

    @classmethod
    def from_setting(cls, client: Any, bucket_setting: str | None = None) -> S3RunStore:
        bucket, _, prefix = (bucket_setting or settings().run_data_bucket).strip("/").partition("/")
        return cls(client, bucket, f"{prefix}/" if prefix else "")

    def run(self, dag_id: str, run_id: str) -> S3RunData:
        return S3RunData(self.client, self.bucket, f"{self.prefix}runs/{safe_name(dag_id)}/{safe_name(run_id)}/")

    def at(self, location: str) -> S3RunData:
        """The run data at `location` (an S3RunData.location of this bucket)."""
        head = f"s3://{self.bucket}/{self.prefix}runs/"
        if not location.startswith(head) or not location.endswith("/"):
            raise ValueError(f"{location} is not a run of {head}")
        return S3RunData(self.client, self.bucket, location[len(f"s3://{self.bucket}/"):])

    def report_key(self, dag_id: str, run_id: str) -> str:
        return f"{self.prefix}reports/{safe_name(dag_id)}/{safe_name(run_id)}.json"

    def put_report(self, dag_id: str, run_id: str, body: bytes) -> str:
        key = self.report_key(dag_id, run_id)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return f"s3://{self.bucket}/{key}"


# --- one directory (single machine) ---


@dataclass(frozen=True)
class LocalRunData:
    directory: Path

    @property
    def location(self) -> str:
        return str(self.directory)

    @contextlib.contextmanager
    def writer(self, name: str) -> Iterator[BinaryIO]:
        path = self.directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            yield out

    def put(self, name: str, data: bytes) -> None:
        with self.writer(name) as out:
            out.write(data)

    def get(self, name: str) -> bytes | None:
        path = self.directory / name
        return path.read_bytes() if path.exists() else None

    def local_copy(self, name: str, scratch: Path) -> Path:
        return self.directory / name

    def delete(self) -> int:
        count = sum(1 for p in self.directory.rglob("*") if p.is_file()) if self.directory.exists() else 0
        shutil.rmtree(self.directory, ignore_errors=True)
        return count


@contextlib.contextmanager
def scratch_dir(base: Path | None = None) -> Iterator[Path]:
    """A task's own scratch folder under `$QFDMO_DATA_DIR/scratch/`, removed when the block ends:
    nothing there outlives the task, and no other task reads it."""
    root = (base or settings().data_dir) / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as directory:
        yield Path(directory)
