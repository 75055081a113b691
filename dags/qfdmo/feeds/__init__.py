"""Partner feeds: one HTTP client (timeouts, retries) and the readers of each API format."""

from qfdmo.feeds.http import EmptyFeedError, FeedError, HttpClient, RetryPolicy, redact_url
from qfdmo.feeds.readers import (
    DownloadResult,
    datafair_dataset_url,
    download,
    iter_raw_rows,
    page_spans,
    read_artisanat,
    read_datafair,
    read_sinoe_nomenclature,
)

__all__ = [
    "DownloadResult",
    "EmptyFeedError",
    "FeedError",
    "HttpClient",
    "RetryPolicy",
    "datafair_dataset_url",
    "download",
    "iter_raw_rows",
    "page_spans",
    "read_artisanat",
    "read_datafair",
    "read_sinoe_nomenclature",
    "redact_url",
]
