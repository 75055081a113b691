"""Feed readers: each returns the pages of one partner API as JSON lines, and `download` streams
them to the run's raw feed (S3 or a local file); `iter_raw_rows` gives the rows back from a local copy.

- data-fair (`…/datasets/<id>/lines`): `{"total", "next", "results"}`; follow `next` (an opaque
  `after=` cursor) until it is absent. A cursor cannot be guessed, so pages are fetched one after
  the other; pages are kept as the API's JSON text (only the cursor is read) to stay cheap.
- artisanat explore v2.1 (`…/catalog/datasets/<id>/records`): `limit` (≤ 100) / `offset`,
  `{"total_count", "results"}`. The API refuses offset + limit > 10,000; bigger datasets are read
  in one go from the dataset's `exports/json` endpoint.
- SINOE: a data-fair dataset plus its waste-code nomenclature (`sinoe-r-nomenclature-dechets`,
  C_TYP_DECHET → L_TYP_DECHET), fetched from the same data-fair as the feed so that a local
  `endpoint_url` serves both.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from qfdmo.feeds.http import EmptyFeedError, FeedError, HttpClient, redact_url

DATAFAIR_PAGE_SIZE = 10_000
ARTISANAT_PAGE_SIZE = 100  # the explore API's maximum `limit`
ARTISANAT_MAX_WINDOW = 10_000  # offset + limit beyond this is refused by the explore API
SINOE_NOMENCLATURE_DATASET = "sinoe-r-nomenclature-dechets"


def _with_params(url: str, **defaults: Any) -> str:
    """`url` with `defaults` added to its query string unless already present."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    query += [(k, str(v)) for k, v in defaults.items() if k not in present]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe=",|()"), parts.fragment))


def _expect(body: Any, key: str, url: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise FeedError(f"{redact_url(url)} answered without '{key}': not the expected API")
    return body[key]


_NEXT = re.compile(rb'"next"\s*:\s*("(?:[^"\\]|\\.)*"|null)')
_EMPTY_RESULTS = re.compile(rb'"results"\s*:\s*\[\s*\]')
_TOTAL = re.compile(rb'"total"\s*:\s*(\d+)')


def _as_line(page: bytes) -> bytes:
    # JSON strings cannot hold a raw newline, so newlines are only layout: safe to flatten.
    return page.replace(b"\r", b" ").replace(b"\n", b" ") if b"\n" in page or b"\r" in page else page


def _decode_page(page: bytes, url: str) -> Any:
    try:
        return json.loads(page)
    except ValueError:
        raise FeedError(f"{redact_url(url)} answered something that is not JSON: {page[:120]!r}") from None


def _datafair_page_meta(page: bytes, url: str) -> tuple[str | None, bool, int | None]:
    """(next URL, page is empty, total) read without decoding the page's rows.

    Decoding 10,000 rows costs ~0.2 s and the normalise step decodes them anyway; only the cursor
    is needed here. A quoted `"next":` can only be the top-level key (inside a string the quotes
    would be escaped, and data-fair rows are flat), so a pattern is enough; anything unexpected
    falls back to a full decode.
    """
    total_match = _TOTAL.search(page, 0, 200) or _TOTAL.search(page)
    total = int(total_match.group(1)) if total_match else None
    results_at = page.find(b'"results"')
    if results_at < 0:
        _expect(_decode_page(page, url), "results", url)
    empty = _EMPTY_RESULTS.match(page, results_at) is not None
    if b'"next"' not in page:
        return None, empty, total
    match = _NEXT.search(page)
    if match is None:
        body = _decode_page(page, url)
        return body.get("next"), not body.get("results"), body.get("total")
    return json.loads(match.group(1)), empty, total


@dataclass
class FeedPages:
    """Pages of a feed as JSON lines `{"results": [...], …}`; `total` once the API announced it."""

    lines: Iterator[bytes]
    total: list[int] = field(default_factory=list)


def read_datafair(client: HttpClient, url: str) -> FeedPages:
    """Pages of a data-fair `lines` endpoint, following `next` until absent."""
    pages = FeedPages(iter(()))

    def lines() -> Iterator[bytes]:
        next_url: str | None = _with_params(url, size=DATAFAIR_PAGE_SIZE)
        seen: set[str] = set()
        while next_url:
            page = client.get_bytes(next_url)
            following, empty, total = _datafair_page_meta(page, next_url)
            if total is not None and not pages.total:
                pages.total.append(total)
            if empty:  # an empty page ends the feed even if a `next` is offered
                return
            yield _as_line(page)
            if following in seen:  # a server repeating a cursor would loop forever
                raise FeedError(f"{redact_url(next_url)}: 'next' points to an already read page")
            if following:
                seen.add(following)
            next_url = following

    pages.lines = lines()
    return pages


def read_artisanat(client: HttpClient, url: str) -> FeedPages:
    """Pages of an explore v2.1 `records` endpoint (limit/offset)."""
    pages = FeedPages(iter(()))
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    limit = min(int(query.pop("limit", ARTISANAT_PAGE_SIZE)), ARTISANAT_PAGE_SIZE)
    query.pop("offset", None)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

    def lines() -> Iterator[bytes]:
        offset = 0
        total: int | None = None
        while total is None or offset < total:
            if total is not None and offset + limit > ARTISANAT_MAX_WINDOW:
                yield from _read_artisanat_export(client, base, query, skip=offset)
                return
            body = client.get_json(base, {**query, "limit": limit, "offset": offset})
            total = int(_expect(body, "total_count", base))
            if not pages.total:
                pages.total.append(total)
            results = _expect(body, "results", base)
            if not results:
                return
            yield json.dumps({"results": results}, ensure_ascii=False).encode()
            offset += len(results)

    pages.lines = lines()
    return pages


def _read_artisanat_export(
    client: HttpClient, records_url: str, query: dict[str, str], skip: int
) -> Iterator[bytes]:
    if not records_url.endswith("/records"):
        raise FeedError(f"{redact_url(records_url)}: cannot derive the exports endpoint")
    export_url = records_url[: -len("/records")] + "/exports/json"
    rows = client.get_json(export_url, query)
    if not isinstance(rows, list):
        raise FeedError(f"{redact_url(export_url)} did not answer a JSON list")
    for start in range(skip, len(rows), 1000):
        yield json.dumps({"results": rows[start : start + 1000]}, ensure_ascii=False).encode()


def datafair_dataset_url(feed_url: str, dataset: str) -> str:
    """URL of `dataset`'s lines on the same data-fair as `feed_url` (…/datasets/<id>/lines)."""
    parts = urlsplit(feed_url)
    marker = "/datasets/"
    if marker not in parts.path:
        raise FeedError(f"{redact_url(feed_url)} is not a data-fair dataset URL")
    base = parts.path[: parts.path.index(marker) + len(marker)]
    return urlunsplit((parts.scheme, parts.netloc, f"{base}{dataset}/lines", f"size={DATAFAIR_PAGE_SIZE}", ""))


def read_sinoe_nomenclature(client: HttpClient, url: str) -> dict[str, str]:
    """C_TYP_DECHET → label of the SINOE waste-code nomenclature (the label column was renamed once)."""
    nomenclature: dict[str, str] = {}
    for row in _rows_of_lines(read_datafair(client, url).lines):
        code = str(row.get("C_TYP_DECHET") or "").strip()
        label = row.get("L_TYP_DECHET") or row.get("LST_TYP_DECHET") or ""
        if code:
            nomenclature[code] = str(label).strip()
    if not nomenclature:
        raise FeedError(f"SINOE nomenclature {redact_url(url)} is empty")
    return nomenclature


@dataclass(frozen=True)
class DownloadResult:
    pages: int
    total: int | None  # rows the API announced; the normalise step counts the rows it reads
    bytes: int
    requests: int
    retries: int
    content_sha256: str  # FeedDigest of the pages: equal for the same rows in the same order
    nomenclature: dict[str, str] | None = None


class FeedDigest:
    """sha256 of a feed's pages with data-fair's `next` cursors left out: the cursor changes from
    one response to the next for the same rows, so it is not content."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, page: bytes) -> None:
        # Only the first `"next"` key: the page's own (data-fair writes it before `results`).
        # Should a row carry one first, the cursor stays in the digest: another digest, no harm.
        start = page.find(b'"next"')
        match = _NEXT.match(page, start) if start >= 0 else None
        if match is None:
            self._sha.update(page)
        else:
            view = memoryview(page)
            self._sha.update(view[:start])
            self._sha.update(view[match.end() :])
        self._sha.update(b"\n")

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def download(
    read: Callable[[HttpClient, str], FeedPages],
    url: str,
    out: _Writable,
    client: HttpClient | None = None,
    nomenclature_dataset: str | None = None,
) -> DownloadResult:
    """Stream the feed (its pages as `read` gives them) to `out` (a local file, an S3 upload), one
    line per page as the API sent it; with `nomenclature_dataset`, read that data-fair dataset of the
    feed's server too (code → label, returned).

    Lines are the API's page objects (`{"results": [rows…], …}`), not one row each: re-encoding
    every row would cost more than the whole download. `iter_raw_rows` gives the rows back.
    Memory stays at about one page whatever the feed's size. An empty feed raises FeedError.
    """
    own_client = client is None
    client = client or HttpClient()
    n_pages = size = 0
    nomenclature = None
    digest = FeedDigest()
    try:
        pages = read(client, url)
        for line in pages.lines:
            out.write(line)
            out.write(b"\n")
            digest.update(line)
            n_pages += 1
            size += len(line) + 1
        total = pages.total[0] if pages.total else None
        if n_pages == 0 or total == 0:
            raise EmptyFeedError(
                f"the feed {redact_url(url)} returned no rows: refusing to treat it as 'every acteur left'"
            )
        if nomenclature_dataset is not None:
            nomenclature = read_sinoe_nomenclature(client, datafair_dataset_url(url, nomenclature_dataset))
        return DownloadResult(
            pages=n_pages,
            total=total,
            bytes=size,
            requests=client.requests_made,
            retries=client.retries_made,
            content_sha256=digest.hexdigest(),
            nomenclature=nomenclature,
        )
    finally:
        if own_client:
            client.close()


_decode: Callable[[str | bytes], Any]
try:
    # pydantic-core (a dependency of Airflow itself) decodes JSON about twice as fast as the
    # standard library, and decoding is most of the cost of reading 500,000 rows.
    from pydantic_core import from_json as _decode
except ImportError:  # pragma: no cover - Airflow always brings it
    _decode = json.loads


def _rows_of_lines(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            page = _decode(line)
        except ValueError as exc:
            raise FeedError(f"a page of the downloaded feed is not valid JSON: {exc}") from None
        if not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise FeedError("a page of the downloaded feed has no 'results' list")
        yield from page["results"]


def iter_raw_rows(raw_path: Path, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows `download` wrote, in feed order, one page decoded at a time; with `start`/`end`
    (offsets from `page_spans`), only the pages of that byte range."""
    with raw_path.open("rb") as raw:
        raw.seek(start)
        yield from _rows_of_lines(_lines_until(raw, end))


def _lines_until(raw: BinaryIO, end: int | None) -> Iterator[bytes]:
    while end is None or raw.tell() < end:
        line = raw.readline()
        if not line:
            return
        yield line


def page_spans(raw_path: Path) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each page of a raw.jsonl, found without decoding anything."""
    spans: list[tuple[int, int]] = []
    start = position = 0
    with raw_path.open("rb", buffering=0) as raw:
        # Read in blocks, not mapped: a mapping of a 600 MB feed would count in the task's memory.
        while block := raw.read(1 << 23):
            newline = block.find(b"\n")
            while newline >= 0:
                spans.append((start, position + newline + 1))
                start = position + newline + 1
                newline = block.find(b"\n", newline + 1)
            position += len(block)
    if start < position:
        spans.append((start, position))
    return spans
