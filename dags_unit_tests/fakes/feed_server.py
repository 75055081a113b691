"""A local HTTP server speaking the partner APIs our feed readers call.

- data-fair: `GET /data-fair/api/v1/datasets/<id>/lines` (size ≤ 10,000, opaque `after` cursor in
  `next`, `total`, `results` with the system fields `_i _id _rand _score _updatedAt _geopoint`,
  `<FIELD>_eq` filters, `q_mode` accepted) and `…/<id>/schema`.
- artisanat explore v2.1: `GET /api/explore/v2.1/catalog/datasets/<id>/records` (limit ≤ 100,
  offset + limit ≤ 10,000, `total_count`, `results`) and `…/<id>/exports/json`.

Datasets are swapped while the server runs (`set_dataset`) to play changed or truncated feeds, and
failures are injected (`fail_next`: N answers 503 or 429 before the normal one). A dataset is a list
of rows or a `GeneratedRows` (count + row factory) so a 500,000-row feed needs no storage.

Run standalone for the benchmark: `python -m fakes --generate-pointsapport 500000` (from
dags_unit_tests/) prints the dataset's lines URL and serves until killed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

DATAFAIR_PREFIX = "/data-fair/api/v1/datasets/"
EXPLORE_PREFIX = "/api/explore/v2.1/catalog/datasets/"
DATAFAIR_MAX_SIZE = 10_000
EXPLORE_MAX_LIMIT = 100
EXPLORE_MAX_WINDOW = 10_000
UPDATED_AT = "2026-11-02T07:45:12.000Z"

Row = dict[str, Any]


@dataclass
class GeneratedRows:
    """`count` rows built on demand by `factory(index)`; nothing is kept in memory."""

    count: int
    factory: Callable[[int], Row]
    # Optional: the line with its system fields as JSON text, for speed (the benchmark's 500,000 rows).
    render: Callable[[int], str] | None = None

    pages: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Row:
        return self.factory(index)

    def rendered(self, start: int, end: int) -> bytes:
        """Rows start..end-1 as the UTF-8 JSON text of a list's items."""
        cached = self.pages.get((start, end))
        if cached is not None:
            return cached
        assert self.render is not None
        return ",".join(self.render(i) for i in range(start, end)).encode()

    def prerender(self, size: int) -> None:
        """Render every page of `size` rows now (the benchmark's server does it before being timed,
        as a real portal answers from an index instead of building rows on request)."""
        for start in range(0, self.count, size):
            end = min(start + size, self.count)
            self.pages[(start, end)] = self.rendered(start, end)


Rows = Sequence[Row] | GeneratedRows


@dataclass
class Failure:
    status: int
    remaining: int
    retry_after: str | None = None
    path_contains: str = ""


@dataclass
class ServerState:
    datasets: dict[str, Rows] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    prefetched: dict[tuple[Any, ...], Future[tuple[bytes, int | None]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _row_id(dataset: str, index: int) -> str:
    return base64.urlsafe_b64encode(hashlib.blake2b(f"{dataset}:{index}".encode(), digest_size=15).digest()).decode()


def _encode_cursor(position: int) -> str:
    # Opaque like data-fair's: clients must follow `next`, not build cursors.
    return base64.urlsafe_b64encode(json.dumps([position, "qfdmo"]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(json.loads(base64.urlsafe_b64decode(padded))[0])


def _render_lines(
    dataset: str,
    rows: Rows,
    start: int,
    size: int,
    filters: tuple[tuple[str, str], ...],
    host: str,
    next_query: dict[str, str],
) -> tuple[bytes, int | None]:
    """One `lines` page as bytes, and the position the next page starts at (None at the end)."""

    def keep(row: Row) -> bool:
        return all(str(row.get(key, "")) == value for key, value in filters)

    if isinstance(rows, GeneratedRows) and rows.render is not None and not filters:
        end = min(start + size, len(rows))
        head: Row = {"total": len(rows)}
        if end < len(rows):
            after = {"after": _encode_cursor(end)}
            head["next"] = f"http://{host}{DATAFAIR_PREFIX}{dataset}/lines?{urlencode(next_query | after)}"
        body = b"".join((json.dumps(head).encode()[:-1], b',"results":[', rows.rendered(start, end), b"]}"))
        return body, end if end < len(rows) else None

    total = len(rows) if not filters else sum(1 for i in range(len(rows)) if keep(rows[i]))
    results: list[Row] = []
    position = start
    while position < len(rows) and len(results) < size:
        row = rows[position]
        if keep(row):
            results.append(_with_system_fields(dataset, position, row))
        position += 1
    body: Row = {"total": total}
    following = None
    if position < len(rows) and results:
        following = position
        after = {"after": _encode_cursor(position)}
        body["next"] = f"http://{host}{DATAFAIR_PREFIX}{dataset}/lines?{urlencode(next_query | after)}"
    body["results"] = results
    return json.dumps(body, ensure_ascii=False).encode(), following


def _with_system_fields(dataset: str, index: int, row: Row) -> Row:
    out = dict(row)
    out["_i"] = index + 1
    out["_rand"] = (index * 7919) % 1_000_003
    out["_id"] = _row_id(dataset, index)
    out["_score"] = None
    out["_updatedAt"] = UPDATED_AT
    if "_geopoint" not in out:
        lat, lon = row.get("latitudewgs84"), row.get("longitudewgs84")
        out["_geopoint"] = f"{lat},{lon}" if lat not in (None, "") and lon not in (None, "") else None
    return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real portals
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with state.lock:
            state.requests.append(self.path)
            failure = next((f for f in state.failures if f.remaining > 0 and f.path_contains in parts.path), None)
            if failure:
                failure.remaining -= 1
        if failure:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after is not None else {}
            self._send(failure.status, {"error": HTTPStatus(failure.status).phrase}, headers)
            return
        if parts.path.startswith(DATAFAIR_PREFIX):
            dataset, _, endpoint = parts.path[len(DATAFAIR_PREFIX) :].partition("/")
            if endpoint == "lines":
                self._datafair_lines(dataset, query)
                return
            if endpoint == "schema":
                self._datafair_schema(dataset)
                return
        elif parts.path.startswith(EXPLORE_PREFIX):
            dataset, _, endpoint = parts.path[len(EXPLORE_PREFIX) :].partition("/")
            if endpoint == "records":
                self._explore_records(dataset, query)
                return
            if endpoint == "exports/json":
                rows = self._rows(dataset)
                if rows is not None:
                    self._send(200, [rows[i] for i in range(len(rows))])
                return
        self._send(404, {"error": f"no route {parts.path}"})

    def _rows(self, dataset: str) -> Rows | None:
        rows = self.server.state.datasets.get(dataset)
        if rows is None:
            self._send(404, {"error": f"dataset {dataset} not found"})
        return rows

    def _datafair_lines(self, dataset: str, query: dict[str, str]) -> None:
        rows = self._rows(dataset)
        if rows is None:
            return
        try:
            size = int(query.get("size", 12))
            start = _decode_cursor(query["after"]) if "after" in query else 0
        except ValueError:
            self._send(400, {"error": "bad size or after"})
            return
        if size > DATAFAIR_MAX_SIZE:
            self._send(400, {"error": f"size must be <= {DATAFAIR_MAX_SIZE}"})
            return
        filters = tuple(sorted((k[: -len("_eq")], v) for k, v in query.items() if k.endswith("_eq")))
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
        next_query = {k: v for k, v in query.items() if k != "after"}
        key = (dataset, id(rows), start, size, filters, host, urlencode(next_query))
        with self.server.state.lock:
            ahead = self.server.state.prefetched.pop(key, None)
        if ahead is None:
            ahead = self.server.prefetcher.submit(_render_lines, dataset, rows, start, size, filters, host, next_query)
        body, position = ahead.result()
        if position is not None:
            # Real data-fair answers from an index in milliseconds; rendering the following page
            # while the client reads this one keeps this fake from dominating the benchmark.
            following = (*key[:2], position, *key[3:])
            future = self.server.prefetcher.submit(
                _render_lines, dataset, rows, position, size, filters, host, next_query
            )
            with self.server.state.lock:
                self.server.state.prefetched = {following: future}
        self._send(200, body)

    def _datafair_schema(self, dataset: str) -> None:
        rows = self._rows(dataset)
        if rows is None:
            return
        keys = list(rows[0]) if len(rows) else []
        schema = [{"key": key, "type": "string"} for key in keys]
        schema += [{"key": key, "type": "string", "x-calculated": True} for key in ("_i", "_rand", "_id", "_geopoint")]
        self._send(200, schema)

    def _explore_records(self, dataset: str, query: dict[str, str]) -> None:
        rows = self._rows(dataset)
        if rows is None:
            return
        try:
            limit = int(query.get("limit", 10))
            offset = int(query.get("offset", 0))
        except ValueError:
            self._send(400, {"error_code": "InvalidRESTParameterError"})
            return
        if limit > EXPLORE_MAX_LIMIT or offset + limit > EXPLORE_MAX_WINDOW:
            self._send(
                400,
                {"error_code": "InvalidRESTParameterError", "message": "Invalid value for limit or offset"},
            )
            return
        page = [rows[i] for i in range(offset, min(offset + limit, len(rows)))]
        self._send(200, {"total_count": len(rows), "results": page})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState
    prefetcher: ThreadPoolExecutor


class FeedServer:
    """The fake portals on 127.0.0.1, served from a background thread."""

    def __init__(self, port: int = 0) -> None:
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.state = ServerState()
        self._httpd.prefetcher = ThreadPoolExecutor(max_workers=1)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def state(self) -> ServerState:
        return self._httpd.state

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.prefetcher.shutdown(wait=False, cancel_futures=True)

    def wait(self) -> None:
        """Block until the server stops (standalone use)."""
        self._thread.join()

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_dataset(self, dataset: str, rows: Rows) -> None:
        with self.state.lock:
            self.state.datasets[dataset] = rows

    def fail_next(self, times: int, status: int = 503, retry_after: str | None = None, path_contains: str = "") -> None:
        with self.state.lock:
            self.state.failures.append(Failure(status, times, retry_after, path_contains))

    def datafair_url(self, dataset: str, **params: str) -> str:
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base_url}{DATAFAIR_PREFIX}{dataset}/lines{query}"

    def explore_url(self, dataset: str) -> str:
        return f"{self.base_url}{EXPLORE_PREFIX}{dataset}/records"

    def requests_to(self, fragment: str) -> int:
        with self.state.lock:
            return sum(1 for path in self.state.requests if fragment in path)
