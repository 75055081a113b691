"""qfdmo.feeds against the local fake portals: pagination, retries, errors, streaming to disk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fakes import feed_server  # noqa: F401 - pytest fixture
from fakes.feed_server import FeedServer
from fakes.generated import pointsapport_row, pointsapport_row_json, pointsapport_rows
from qfdmo.feeds import (
    DownloadResult,
    FeedError,
    HttpClient,
    RetryPolicy,
    datafair_dataset_url,
    iter_raw_rows,
    redact_url,
)
from qfdmo.feeds import download as download_to
from qfdmo.feeds.readers import SINOE_NOMENCLATURE_DATASET, read_artisanat, read_datafair


def download(read, url: str, folder: Path, client: HttpClient, **kwargs) -> DownloadResult:
    """The feed streamed to `<folder>/raw.jsonl` (the source DAGs stream it to S3)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "raw.jsonl").open("wb") as out:
        return download_to(read, url, out, client, **kwargs)


def _client(waits: list[float] | None = None, attempts: int = 4) -> HttpClient:
    record = waits.append if waits is not None else (lambda _s: None)
    return HttpClient(connect_timeout=2, read_timeout=10, retry=RetryPolicy(attempts=attempts), sleep=record)


def test_datafair_follows_next_and_keeps_filters(tmp_path):
    with FeedServer() as server:
        rows = [{"C_SERVICE": str(i), "ANNEE": 2024 if i % 3 else 2023} for i in range(25)]
        server.set_dataset("sinoe", rows)
        url = server.datafair_url("sinoe", size="4", q_mode="simple", ANNEE_eq="2024")
        result = download(read_datafair, url, tmp_path, _client())
        got = list(iter_raw_rows(tmp_path / "raw.jsonl"))
    expected = [r["C_SERVICE"] for r in rows if r["ANNEE"] == 2024]
    assert [r["C_SERVICE"] for r in got] == expected
    # the last `next` leads to an empty page, which ends the feed
    assert result.total == len(expected) and result.pages == 4 and result.requests == 5
    # data-fair's system fields reach the raw file untouched
    assert {"_i", "_id", "_rand", "_score", "_updatedAt", "_geopoint"} <= set(got[0])


def test_retries_5xx_and_429_with_retry_after_then_succeeds(tmp_path):
    waits: list[float] = []
    with FeedServer() as server:
        server.set_dataset("eo", [{"id": i} for i in range(30)])
        server.fail_next(2, status=503)
        server.fail_next(1, status=429, retry_after="3")
        result = download(read_datafair, server.datafair_url("eo", size="10"), tmp_path, _client(waits))
    assert result.retries == 3 and result.pages == 3
    assert 3.0 in waits  # Retry-After honoured
    assert all(w <= 3.0 for w in waits)


def test_final_failure_names_url_without_secret(tmp_path):
    with FeedServer() as server:
        server.set_dataset("eo", [{"id": 1}])
        server.fail_next(10, status=502)
        with pytest.raises(FeedError) as error:
            download(read_datafair, server.datafair_url("eo", apikey="s3cr3t"), tmp_path, _client(attempts=3))
    message = str(error.value)
    assert "after 3 attempts" in message and "HTTP 502" in message
    assert "/datasets/eo/lines" in message and "s3cr3t" not in message


def test_connection_errors_are_retried_then_reported(tmp_path):
    with FeedServer() as server:
        url = server.datafair_url("eo")
    waits: list[float] = []
    with pytest.raises(FeedError, match="ConnectionError"):
        download(read_datafair, url, tmp_path, _client(waits, attempts=3))
    assert len(waits) == 2


def test_client_error_is_not_retried(feed_server, tmp_path):  # noqa: F811
    with pytest.raises(FeedError, match="HTTP 404"):
        download(read_datafair, feed_server.datafair_url("no-such-dataset"), tmp_path, _client())
    assert feed_server.requests_to("no-such-dataset") == 1


def test_empty_feed_fails(tmp_path):
    with FeedServer() as server:
        server.set_dataset("eo", [])
        with pytest.raises(FeedError, match="returned no rows"):
            download(read_datafair, server.datafair_url("eo"), tmp_path, _client())


def test_artisanat_limit_offset_pages(feed_server, tmp_path):  # noqa: F811
    url = feed_server.explore_url("reparacteurs") + "?limit=500"  # more than the API allows: clipped to 100
    result = download(read_artisanat, url, tmp_path, _client())
    rows = list(iter_raw_rows(tmp_path / "raw.jsonl"))
    assert len(rows) == 230 and result.total == 230 and result.pages == 3
    assert rows[0]["id"] == "1001" and rows[-1]["id"] == "1230"


def test_artisanat_beyond_the_offset_window_reads_the_export(tmp_path):
    with FeedServer() as server:
        server.set_dataset("big", [{"id": str(i)} for i in range(10_150)])
        download(read_artisanat, server.explore_url("big"), tmp_path, _client())
        assert server.requests_to("/exports/json") == 1
    assert [r["id"] for r in iter_raw_rows(tmp_path / "raw.jsonl")] == [str(i) for i in range(10_150)]


def test_sinoe_nomenclature_comes_from_the_same_data_fair(feed_server, tmp_path):  # noqa: F811
    url = feed_server.datafair_url("sinoe-(r)-annuaire-des-decheteries-dma", size="10000", ANNEE_eq="2024")
    result = download(read_datafair, url, tmp_path, _client(), nomenclature_dataset=SINOE_NOMENCLATURE_DATASET)
    assert result.nomenclature is not None
    nomenclature = result.nomenclature
    assert nomenclature["01.1"] == "Déchets textiles"
    assert result.total == 9
    assert datafair_dataset_url(url, "x").startswith(feed_server.base_url + "/data-fair/api/v1/datasets/x/lines")


def test_generated_rows_render_as_their_dict_form():
    for i in range(8):
        assert {k: v for k, v in json.loads(pointsapport_row_json(i)).items() if not k.startswith("_")} == (
            pointsapport_row(i)
        )


def test_streaming_keeps_memory_flat(tmp_path):
    """Peak Python memory of a download (client and the in-process feed server, which builds one page
    at a time) does not grow with the feed: 16 pages of 500 rows peak within 1.5x of 4 pages (pages
    are built and read one at a time), where a client holding the feed would need ~4x."""
    import tracemalloc

    def peak_bytes(rows: int, folder: Path) -> int:
        with FeedServer() as server:
            server.set_dataset("eo", pointsapport_rows(rows))
            tracemalloc.start()
            try:
                result = download(read_datafair, server.datafair_url("eo", size="500"), folder, _client())
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert sum(1 for _ in iter_raw_rows(folder / "raw.jsonl")) == rows
        assert result.pages == rows // 500
        return peak

    small, large = peak_bytes(2_000, tmp_path / "small"), peak_bytes(8_000, tmp_path / "large")
    assert large < 1.5 * small, (small, large)


def test_redact_url():
    assert redact_url("https://u:p@h.example/x?apikey=abc&size=10") == "https://h.example/x?apikey=***&size=10"


def test_retry_after_forms_cap_and_backoff_bounds():
    from email.utils import formatdate

    from urllib3.exceptions import ProtocolError
    from urllib3.response import HTTPResponse

    client = HttpClient(retry=RetryPolicy(attempts=10, backoff_factor=0.5, backoff_max=4, backoff_jitter=0.5))

    def retry_after(value: str) -> float | None:
        return client.retry.get_retry_after(HTTPResponse(headers={"Retry-After": value}))

    assert retry_after("7") == 7
    assert 25 <= retry_after(formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after("soon") is None  # urllib3 alone raises InvalidHeader: the backoff applies instead
    assert retry_after("86400") == 120  # urllib3's own cap is 6 hours
    retry = client.retry
    for n in range(1, 10):
        retry = retry.increment("GET", "/lines", error=ProtocolError("cut"))
        assert all(0 <= retry.get_backoff_time() <= min(4, 0.5 * 2 ** (n - 1)) + 0.5 for _ in range(20))


def test_a_huge_retry_after_is_waited_for_at_most_the_cap(tmp_path):
    waits: list[float] = []
    with FeedServer() as server:
        server.set_dataset("eo", [{"id": 1}])
        server.fail_next(1, status=503, retry_after="86400")
        result = download(read_datafair, server.datafair_url("eo"), tmp_path, _client(waits))
    assert waits == [120] and result.retries == 1 and result.requests == 2


def test_a_body_cut_mid_transfer_is_retried(tmp_path):
    import http.server
    import threading

    served = []

    class CutOnce(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"total": 1, "results": [{"id": "1"}]}'
            if self.path.startswith("/next"):
                body = b'{"results": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            served.append(self.path)
            if len(served) == 1:  # half the body, then the connection drops
                self.wfile.write(body[:10])
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    waits: list[float] = []
    try:
        client = _client(waits)
        body = client.get_bytes(f"http://127.0.0.1:{server.server_port}/lines?apikey=s3cr3t")
    finally:
        server.shutdown()
        server.server_close()
    assert body == b'{"total": 1, "results": [{"id": "1"}]}'
    assert len(served) == 2 and client.retries_made == 1 and client.requests_made == 2


def test_a_body_that_is_not_utf8_fails_clearly(tmp_path):
    import http.server
    import threading

    class Latin1(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = '{"total": 1, "results": [{"nom": "Café"}]}'.encode("latin-1")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Latin1)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(FeedError, match="not UTF-8"):
            download(read_datafair, f"http://127.0.0.1:{server.server_port}/lines", tmp_path, _client())
    finally:
        server.shutdown()
        server.server_close()


def test_feed_digest_ignores_the_cursor_not_the_rows():
    from qfdmo.feeds.readers import FeedDigest

    def digest(*pages: bytes) -> str:
        d = FeedDigest()
        for page in pages:
            d.update(page)
        return d.hexdigest()

    page = b'{"total": 2, "next": "%s", "results": [{"id": "%s"}]}'
    assert digest(page % (b"http://x/lines?after=1", b"a")) == digest(page % (b"http://x/lines?after=99", b"a"))
    assert digest(page % (b"c", b"a")) != digest(page % (b"c", b"b"))
    # Page boundaries count: the same bytes split differently are another feed.
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
