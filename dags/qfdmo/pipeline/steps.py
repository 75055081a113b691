"""The steps of a source DAG as plain functions (no Airflow): each takes references (a run
directory, a run key, a DSN) and returns a typed result of counts and timings
(qfdmo.pipeline.results), which is what travels between tasks. Bulk data stays in files and
staging tables.

    download -> check_feed -> normalise -> stage (+ guard decision) -> [approval] -> apply ; finish always

`check_feed` is the fast path: when it says the feed is unchanged, the rest is not run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from qfdmo.feeds import HttpClient, redact_url
from qfdmo.feeds import download as download_feed
from qfdmo.feeds.readers import SINOE_NOMENCLATURE_DATASET
from qfdmo.pipeline import fingerprint as fp
from qfdmo.pipeline.parallel_normalise import normalise_feed
from qfdmo.pipeline.results import Applied, AppliedFeed, Diff, Downloaded, FeedCheck, Normalised, Staged
from qfdmo.sources import NormalisationContext, SourceDeclaration
from qfdmo.sources.formats import feed_format

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


def _nomenclature(run_dir: Path) -> str:
    path = run_dir / NOMENCLATURE_FILE
    return path.read_text(encoding="utf-8") if path.exists() else ""


def download(
    declaration: SourceDeclaration, endpoint_url: str | None, run_dir: Path, client: HttpClient | None = None
) -> Downloaded:
    """Fetch the feed (`endpoint_url` or the declared URL) into `<run_dir>/raw.jsonl`.

    A format that needs a nomenclature (SINOE) reads it from the same data-fair as the feed, so a local
    `endpoint_url` serves both.
    """
    started = time.perf_counter()
    url = endpoint_url or declaration.feed_url
    feed_kind = feed_format(declaration.format)
    nomenclature_dataset = _nomenclature_dataset(declaration) if feed_kind.needs_nomenclature else None
    result = download_feed(feed_kind.read, url, run_dir, client, nomenclature_dataset=nomenclature_dataset)
    # The URL is part of the run's inputs (another endpoint is another feed), hashed so that no
    # credential it may carry travels in XCom.
    feed = hashlib.sha256(url.encode() + b"\0" + result.content_sha256.encode()).hexdigest()
    return Downloaded(
        url=redact_url(url),
        feed_sha256=feed,
        pages=result.pages,
        total=result.total,
        bytes=result.bytes,
        requests=result.requests,
        retries=result.retries,
        seconds=round(time.perf_counter() - started, 3),
    )


def check_feed(declaration: SourceDeclaration, run_dir: Path, dsn: str, downloaded: Downloaded) -> FeedCheck:
    """Same inputs as the source's last applied run, and its acteurs untouched since? (fingerprint.py)"""
    from qfdmo.carte_db import load_reference_codes

    started = time.perf_counter()
    with _connect(dsn) as conn:
        result = fp.check(
            conn,
            source=declaration.code,
            source_codes=declaration.source_codes,
            downloaded=downloaded,
            declaration=declaration.model_dump(mode="json"),
            reference=dataclasses.asdict(load_reference_codes(conn)),
            nomenclature=_nomenclature(run_dir),
        )
    log.info("%s: %s", declaration.code, result.reason)
    return result.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def normalise(declaration: SourceDeclaration, run_dir: Path, dsn: str) -> Normalised:
    """Normalise `<run_dir>/raw.jsonl` into the four staging files; reference codes come from the DB."""
    from qfdmo.carte_db import load_reference_codes

    started = time.perf_counter()
    nomenclature = _nomenclature(run_dir)
    with _connect(dsn) as conn:
        reference = load_reference_codes(conn)
    context = NormalisationContext(nomenclature=json.loads(nomenclature) if nomenclature else {})
    report = normalise_feed(declaration, run_dir / RAW_FILE, reference, run_dir, context).to_dict()
    normalised = Normalised.from_dict(
        {
            **report,
            "warnings": _top(report.get("warnings", {})),
            "unknown_values": {kind: _top(values) for kind, values in report.get("unknown_values", {}).items()},
            "rejections": _top(report.get("rejections", {}), limit=50),
            "seconds": round(time.perf_counter() - started, 3),
        }
    )
    if not normalised.acteurs_written:
        # Nothing usable is a configuration or feed problem, not "every acteur left": stop here.
        reasons = ", ".join(f"{reason} ({n})" for reason, n in normalised.rejections.items()) or "none"
        raise PipelineError(f"all {normalised.rows_read} rows of the feed were rejected; reasons: {reasons}")
    return normalised


def needs_approval(to_deactivate: int, active_before: int, max_deactivation_share: float) -> bool:
    """True when the run would set more than `max_deactivation_share` of the ACTIF acteurs SUPPRIME.

    A source with no ACTIF acteur yet (first load) never needs approval.
    """
    if active_before <= 0:
        return False
    return to_deactivate / active_before > max_deactivation_share


def stage(
    declaration: SourceDeclaration, run_dir: Path, run_key: str, dsn: str, max_deactivation_share: float
) -> Staged:
    """COPY the normalised files into staging, diff them against qfdmo_acteur, decide the guard."""
    from qfdmo.carte_db import stage as stage_run

    started = time.perf_counter()
    # Two connections: the propositions are staged on the second while the first stages the acteurs.
    with _connect(dsn) as conn, _connect(dsn) as second_conn:
        result = stage_run(conn, run_key, run_dir, declaration.source_codes, second_conn)
    diff = result.diff
    return Staged(
        run_key=result.run_key,
        rows=result.rows,
        acteurs=result.acteurs,
        duplicates_merged=result.duplicates_merged,
        diff=Diff.from_dict(diff.as_dict()),
        seconds=result.seconds,
        statement_seconds=result.statement_seconds,
        max_deactivation_share=max_deactivation_share,
        needs_approval=needs_approval(diff.to_deactivate, diff.active_before, max_deactivation_share),
        seconds_total=round(time.perf_counter() - started, 3),
    )


def apply(
    declaration: SourceDeclaration,
    run_key: str,
    dsn: str,
    checked: FeedCheck | None = None,
    normalised: Normalised | None = None,
    staged: Staged | None = None,
) -> Applied:
    """Write the staged run into the carte tables in one transaction, then drop the staging tables.

    Given the run's check, normalisation and staging results, then records its fingerprint with the
    acteurs' witness for the next run's fast path; without them, forgets the source's record.
    """
    from qfdmo.carte_db import apply as apply_run
    from qfdmo.carte_db import drop_staging

    started = time.perf_counter()
    with _connect(dsn) as conn:
        result = apply_run(conn, run_key, declaration.source_codes)
        drop_staging(conn, run_key)
        try:
            if checked is not None and normalised is not None and staged is not None:
                summary = AppliedFeed(normalised=normalised, rows=staged.rows, acteurs=staged.acteurs,
                                      duplicates_merged=staged.duplicates_merged, inactive=result.diff.inactive)
                fp.write_record(conn, declaration.code, checked.fingerprint,
                                fp.witness(conn, declaration.source_codes), summary)
            else:
                fp.forget_record(conn, declaration.code)
        except psycopg.Error as exc:  # the apply is committed; the next run just takes the full path
            log.warning("could not record the applied feed of %s: %s", declaration.code, exc)
    return Applied.from_dict({**result.as_dict(), "seconds_total": round(time.perf_counter() - started, 3)})


def finish(run_key: str, dsn: str, run_dir: Path, keep_files: bool) -> None:
    """Drop the run's staging tables (whatever happened) and its files unless kept for debugging.

    A database error is raised after the files are handled: the cleanup task then fails, visibly.
    """
    from qfdmo.carte_db import drop_staging

    try:
        with _connect(dsn) as conn:
            drop_staging(conn, run_key)
    finally:
        if not keep_files:
            shutil.rmtree(run_dir, ignore_errors=True)
