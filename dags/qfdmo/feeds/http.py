"""The one HTTP client every feed reader uses.

A `requests.Session` (keep-alive: a 50-page feed reuses one connection) with connect/read timeouts
and urllib3's `Retry` mounted on it: bounded retries with exponential backoff and jitter on
connection errors, read timeouts, 5xx and 429, `Retry-After` honoured up to a cap. A body cut
mid-transfer (which urllib3 cannot retry: requests reads the body after urllib3 returns) spends
the same kind of budget here. The final error names the URL without its query string's secrets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

USER_AGENT = "qfdmo-data-platform/1.0 (+https://quefairedemesobjets.ademe.fr)"
# Query parameters whose values never reach a log or an error message.
SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token", "password", "secret"})
RETRIED_STATUSES = frozenset({429, *range(500, 600)})


class FeedError(RuntimeError):
    """A feed could not be read (after retries), or answered something unusable."""


class EmptyFeedError(FeedError):
    """The feed answered, with no rows: never read as "every acteur left" (retrying will not help)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # total tries, first one included
    # urllib3's backoff: none before the first retry, then backoff_factor * 2**(n-1) (at most
    # backoff_max) plus a uniform jitter of up to backoff_jitter seconds.
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    # urllib3 caps Retry-After at 6 hours by default: a task would sit that long on one server's word.
    retry_after_max: int = 120


class _Retry(Retry):
    """urllib3's Retry, with the two things the feeds need on top.

    - A malformed `Retry-After` ("soon") falls back to the backoff: urllib3 raises InvalidHeader,
      which would end the whole read on a header that only meant "later".
    - The wait goes through the client's `on_retry` (it counts and logs retries, and tests record
      the waits instead of sleeping). `new()` carries it over, as urllib3 copies the object on
      every retry.
    """

    on_retry: Callable[[float, str], None] | None = None

    def new(self, **kw: Any) -> _Retry:
        retry = super().new(**kw)
        retry.on_retry = self.on_retry
        return retry

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        try:
            return super().get_retry_after(response)
        except InvalidHeader:
            return None

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        if not wait:
            wait = self.get_backoff_time()
        last = self.history[-1] if self.history else None
        if last is None:
            problem = "retry"
        elif last.status is not None:
            problem = f"HTTP {last.status}"
        else:
            problem = type(last.error).__name__
        if self.on_retry is not None:
            self.on_retry(wait, problem)
        else:
            time.sleep(wait)


def redact_url(url: str) -> str:
    """The URL as it may be shown: credentials and secret query values removed."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = urlencode(
        [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*,|",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class HttpClient:
    """GET JSON with timeouts and retries. One instance per run (it holds a connection pool)."""

    def __init__(
        self,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.timeout = (connect_timeout, read_timeout)
        self.policy = retry or RetryPolicy()
        self._sleep = sleep
        self.retry = _Retry(
            total=self.policy.attempts - 1,
            status_forcelist=RETRIED_STATUSES,
            allowed_methods=frozenset({"GET"}),
            backoff_factor=self.policy.backoff_factor,
            backoff_max=self.policy.backoff_max,
            backoff_jitter=self.policy.backoff_jitter,
            respect_retry_after_header=True,
            retry_after_max=self.policy.retry_after_max,
            raise_on_status=False,  # the last 5xx/429 comes back as a response: its status names the failure
        )
        self.retry.on_retry = self._retried_by_urllib3
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        adapter = HTTPAdapter(max_retries=self.retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.requests_made = 0
        self.retries_made = 0
        self._shown_url = ""

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retried_by_urllib3(self, wait: float, problem: str) -> None:
        self.requests_made += 1  # urllib3 sends the request again itself
        self._wait(wait, problem)

    def _wait(self, wait: float, problem: str) -> None:
        self.retries_made += 1
        log.warning("GET %s: %s, retry in %.1fs", self._shown_url, problem, wait)
        self._sleep(wait)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET `url` and decode its JSON body, retrying transient failures."""
        body = self.get_bytes(url, params)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise FeedError(f"GET {self._shown(url, params)} returned a body that is not JSON: {exc}") from None

    @staticmethod
    def _shown(url: str, params: Mapping[str, Any] | None) -> str:
        return redact_url(url if not params else f"{url}{'&' if '?' in url else '?'}{urlencode(params)}")

    def get_bytes(self, url: str, params: Mapping[str, Any] | None = None) -> bytes:
        """GET `url` and return its body, checked to be UTF-8 (JSON's encoding), retrying transient failures.

        Bytes, not text: pages are written to disk and decoded as JSON from bytes, so decoding
        them to str here would only be undone (~2 s for a 600 MB feed).
        """
        shown = self._shown_url = self._shown(url, params)
        failed = f"GET {shown} failed after {self.policy.attempts} attempts"
        retry: Retry = self.retry
        while True:
            self.requests_made += 1
            try:
                # Streamed, then read in 1 MiB blocks: `response.content` reads 10 KiB at a time,
                # and those 60,000 reads were a third of a 600 MB feed's download time.
                response = self.session.get(url, params=params, timeout=self.timeout, stream=True)
            except (requests.ConnectionError, requests.Timeout) as exc:  # urllib3 spent the budget on it
                reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else None
                problem = type(exc).__name__ + (f" ({type(reason).__name__})" if reason is not None else "")
                raise FeedError(f"{failed}: {problem}") from None
            status = response.status_code
            if status >= 400:
                text = "" if status in RETRIED_STATUSES else response.text[:200]
                response.close()
                if status in RETRIED_STATUSES:  # what urllib3 still got after its last retry
                    raise FeedError(f"{failed}: HTTP {status}")
                raise FeedError(f"GET {shown} failed: HTTP {status} {text!r}")
            try:
                body = b"".join(response.iter_content(1 << 20))
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                # A body cut or stalled mid-transfer: as transient as a refused connection.
                response.close()
                try:
                    retry = retry.increment("GET", url, error=ProtocolError(type(exc).__name__))
                except MaxRetryError:
                    raise FeedError(f"{failed}: {type(exc).__name__}") from None
                self._wait(retry.get_backoff_time(), type(exc).__name__)
                continue
            # Bytes, not `response.text`: without a charset it guesses the encoding over the
            # whole body, which costs more than parsing it.
            if not body.isascii():
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FeedError(f"GET {shown} returned a body that is not UTF-8: {exc}") from None
            return body
