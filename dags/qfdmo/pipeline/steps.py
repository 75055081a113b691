"""The steps of a source DAG as plain functions (no Airflow): each takes references (a run
directory, a run key, a DSN) and returns a small JSON-serialisable dict of counts and timings,
which is what travels between tasks. Bulk data stays in files and staging tables.

    download -> normalise -> stage (+ guard decision) -> [approval] -> apply ; finish always
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from qfdmo.feeds import HttpClient, iter_raw_rows, redact_url
from qfdmo.feeds import download as download_feed
from qfdmo.feeds.readers import SINOE_NOMENCLATURE_DATASET
from qfdmo.sources import NormalisationContext, SourceDeclaration
from qfdmo.sources import normalise as normalise_rows

log = logging.getLogger(__name__)

RAW_FILE = "raw.jsonl"
NOMENCLATURE_FILE = "nomenclature.json"
# Bounds on what a step returns (it goes to XCom and into the approval form).
MAX_VALUES_PER_KIND = 20


class PipelineError(RuntimeError):
    """The run cannot go on (message meant for the task log)."""


def _connect(dsn: str) -> psycopg.Connection:
    # autocommit: the carte_db functions open their own transaction blocks.
    return psycopg.connect(dsn, autocommit=True, application_name="qfdmo-pipeline")


def _top(counts: Mapping[str, int], limit: int = MAX_VALUES_PER_KIND) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit])


def _nomenclature_dataset(declaration: SourceDeclaration) -> str:
    if not declaration.nomenclature_url:
        return SINOE_NOMENCLATURE_DATASET
    path = urlsplit(declaration.nomenclature_url).path.rstrip("/")
    parts = path.split("/")
    return parts[parts.index("datasets") + 1] if "datasets" in parts else SINOE_NOMENCLATURE_DATASET


def download(
    declaration: SourceDeclaration, endpoint_url: str | None, run_dir: Path, client: HttpClient | None = None
) -> dict[str, Any]:
    """Fetch the feed (`endpoint_url` or the declared URL) into `<run_dir>/raw.jsonl`.

    For SINOE the nomenclature is read from the same data-fair as the feed, so a local
    `endpoint_url` serves both.
    """
    started = time.perf_counter()
    url = endpoint_url or declaration.feed_url
    result = download_feed(
        declaration.format, url, run_dir, client, nomenclature_dataset=_nomenclature_dataset(declaration)
    )
    return {
        "url": redact_url(url),
        "pages": result.pages,
        "total": result.total,
        "bytes": result.bytes,
        "requests": result.requests,
        "retries": result.retries,
        "seconds": round(time.perf_counter() - started, 3),
    }


def normalise(declaration: SourceDeclaration, run_dir: Path, dsn: str) -> dict[str, Any]:
    """Normalise `<run_dir>/raw.jsonl` into the four staging files; reference codes come from the DB."""
    from qfdmo.carte_db import load_reference_codes

    started = time.perf_counter()
    with _connect(dsn) as conn:
        reference = load_reference_codes(conn)
    nomenclature_file = run_dir / NOMENCLATURE_FILE
    context = NormalisationContext(
        nomenclature=json.loads(nomenclature_file.read_text(encoding="utf-8")) if nomenclature_file.exists() else {}
    )
    report = normalise_rows(declaration, iter_raw_rows(run_dir / RAW_FILE), reference, run_dir, context).to_dict()
    report["warnings"] = _top(report.get("warnings", {}))
    report["unknown_values"] = {kind: _top(values) for kind, values in report.get("unknown_values", {}).items()}
    report["rejections"] = _top(report.get("rejections", {}), limit=50)
    report["seconds"] = round(time.perf_counter() - started, 3)
    if not report.get("acteurs_written"):
        # Nothing usable is a configuration or feed problem, not "every acteur left": stop here.
        reasons = ", ".join(f"{reason} ({n})" for reason, n in report["rejections"].items()) or "none"
        raise PipelineError(
            f"all {report.get('rows_read', 0)} rows of the feed were rejected; reasons: {reasons}"
        )
    return report


def needs_approval(to_deactivate: int, active_before: int, max_deactivation_share: float) -> bool:
    """True when the run would set more than `max_deactivation_share` of the ACTIF acteurs SUPPRIME.

    A source with no ACTIF acteur yet (first load) never needs approval.
    """
    if active_before <= 0:
        return False
    return to_deactivate / active_before > max_deactivation_share


def stage(
    declaration: SourceDeclaration, run_dir: Path, run_key: str, dsn: str, max_deactivation_share: float
) -> dict[str, Any]:
    """COPY the normalised files into staging, diff them against qfdmo_acteur, decide the guard."""
    from qfdmo.carte_db import stage as stage_run

    started = time.perf_counter()
    with _connect(dsn) as conn:
        result = stage_run(conn, run_key, run_dir, declaration.source_codes)
    staged = result.as_dict()
    diff = result.diff
    staged["max_deactivation_share"] = max_deactivation_share
    staged["needs_approval"] = needs_approval(diff.to_deactivate, diff.active_before, max_deactivation_share)
    staged["seconds_total"] = round(time.perf_counter() - started, 3)
    return staged


def apply(declaration: SourceDeclaration, run_key: str, dsn: str) -> dict[str, Any]:
    """Write the staged run into the carte tables in one transaction, then drop the staging tables."""
    from qfdmo.carte_db import apply as apply_run
    from qfdmo.carte_db import drop_staging

    started = time.perf_counter()
    with _connect(dsn) as conn:
        result = apply_run(conn, run_key, declaration.source_codes)
        drop_staging(conn, run_key)
    applied = result.as_dict()
    applied["seconds_total"] = round(time.perf_counter() - started, 3)
    return applied


def finish(run_key: str, dsn: str, run_dir: Path, keep_files: bool) -> None:
    """Drop the run's staging tables (whatever happened) and its files unless kept for debugging."""
    from qfdmo.carte_db import drop_staging

    try:
        with _connect(dsn) as conn:
            drop_staging(conn, run_key)
    except psycopg.Error as exc:  # the report must still be written; say it loudly instead
        log.error("could not drop the staging tables of %s: %s", run_key, exc)
    if not keep_files:
        shutil.rmtree(run_dir, ignore_errors=True)
