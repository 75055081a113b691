"""The one HTTP client every feed reader uses.

A `requests.Session` (keep-alive: a 50-page feed reuses one connection) with connect/read timeouts
and bounded retries with exponential backoff and full jitter on connection errors, 5xx and 429
(`Retry-After` honoured, capped). The final error names the URL without its query string's secrets.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

log = logging.getLogger(__name__)

USER_AGENT = "qfdmo-data-platform/1.0 (+https://quefairedemesobjets.ademe.fr)"
# Query parameters whose values never reach a log or an error message.
SECRET_PARAMS = frozenset({"apikey", "api_key", "key", "token", "access_token", "password", "secret"})


class FeedError(RuntimeError):
    """A feed could not be read (after retries), or answered something unusable."""


class EmptyFeedError(FeedError):
    """The feed answered, with no rows: never read as "every acteur left" (retrying will not help)."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # total tries, first one included
    backoff_base: float = 0.5  # seconds; wait before try n (n>=2) is uniform(0, base * 2**(n-2))
    backoff_max: float = 30.0
    retry_after_max: float = 120.0  # a server asking for more than this is not waited for that long


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


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


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
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.requests_made = 0
        self.retries_made = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1)))

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
        shown = self._shown(url, params)
        last_problem = ""
        for attempt in range(1, self.retry.attempts + 1):
            wait: float | None = None
            try:
                self.requests_made += 1
                # Streamed, then read in 1 MiB blocks: `response.content` reads 10 KiB at a time,
                # and those 60,000 reads were a third of a 600 MB feed's download time.
                response = self.session.get(url, params=params, timeout=self.timeout, stream=True)
                body = b"".join(response.iter_content(1 << 20)) if response.status_code < 400 else b""
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # (a body cut mid-transfer is as transient as a refused connection)
                last_problem = f"{type(exc).__name__}"
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    last_problem = f"HTTP {status}"
                    wait = _retry_after_seconds(response.headers.get("Retry-After"))
                    if wait is not None:
                        wait = min(wait, self.retry.retry_after_max)
                    response.close()
                elif status >= 400:
                    raise FeedError(f"GET {shown} failed: HTTP {status} {response.text[:200]!r}")
                else:
                    # Bytes, not `response.text`: without a charset it guesses the encoding over the
                    # whole body, which costs more than parsing it.
                    if not body.isascii():
                        try:
                            body.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            raise FeedError(f"GET {shown} returned a body that is not UTF-8: {exc}") from None
                    return body
            if attempt == self.retry.attempts:
                break
            if wait is None:
                wait = self._backoff(attempt)
            self.retries_made += 1
            log.warning("GET %s: %s, retry %d/%d in %.1fs", shown, last_problem, attempt, self.retry.attempts - 1, wait)
            self._sleep(wait)
        raise FeedError(f"GET {shown} failed after {self.retry.attempts} attempts: {last_problem}")
