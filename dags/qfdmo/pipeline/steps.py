"""The steps of a source DAG as plain functions (no Airflow): each takes references (the run's
data, a run key, a DSN) and returns a typed result of counts and timings
(qfdmo.pipeline.results), which is what travels between tasks. Bulk data goes from one step to the
next through the run's data in S3 (run_data.py: the raw feed, the nomenclature) and the run's
staging tables (the normalised rows), never through a disk another step would have to share.

    download -> check_feed -> normalise (+ COPY into staging) -> stage (+ guard decision) -> [approval]
             -> apply ; finish always

`check_feed` is the fast path: when it says the feed is unchanged, the rest is not run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psycopg

from qfdmo.feeds import HttpClient, redact_url
from qfdmo.feeds import download as download_feed
from qfdmo.feeds.readers import SINOE_NOMENCLATURE_DATASET
from qfdmo.pipeline import fingerprint as fp
from qfdmo.pipeline import retention
from qfdmo.pipeline.parallel_normalise import normalise_feed
from qfdmo.pipeline.results import Applied, AppliedFeed, Diff, Downloaded, FeedCheck, Normalised, Staged
from qfdmo.pipeline.run_data import NOMENCLATURE_FILE, NORMALISED_DIR, RAW_FILE, RunData, scratch_dir
from qfdmo.sources import NormalisationContext, SourceDeclaration
from qfdmo.sources.formats import feed_format

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def _nomenclature(run: RunData) -> str:
    data = run.get(NOMENCLATURE_FILE)
    return data.decode("utf-8") if data is not None else ""


def download(
    declaration: SourceDeclaration, endpoint_url: str | None, run: RunData, client: HttpClient | None = None
) -> Downloaded:
    """Stream the feed (`endpoint_url` or the declared URL) into the run's `raw.jsonl` (S3: a
    multipart upload as the pages arrive; an empty or failed feed leaves no object).

    A format that needs a nomenclature (SINOE) reads it from the same data-fair as the feed, so a local
    `endpoint_url` serves both; it is kept beside the feed (`nomenclature.json`).
    """
    started = time.perf_counter()
    url = endpoint_url or declaration.feed_url
    feed_kind = feed_format(declaration.format)
    nomenclature_dataset = _nomenclature_dataset(declaration) if feed_kind.needs_nomenclature else None
    with run.writer(RAW_FILE) as out:
        result = download_feed(feed_kind.read, url, out, client, nomenclature_dataset=nomenclature_dataset)
    if result.nomenclature is not None:
        run.put(NOMENCLATURE_FILE, json.dumps(result.nomenclature, ensure_ascii=False).encode())
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


def check_feed(declaration: SourceDeclaration, run: RunData, dsn: str, downloaded: Downloaded) -> FeedCheck:
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
            nomenclature=_nomenclature(run),
        )
    log.info("%s: %s", declaration.code, result.reason)
    return result.model_copy(update={"seconds": round(time.perf_counter() - started, 3)})


def normalise(
    declaration: SourceDeclaration, run: RunData, run_key: str, dsn: str, scratch_base: Path | None = None
) -> Normalised:
    """Normalise the run's `raw.jsonl` into the four run files on this task's scratch disk, then COPY
    them into the run's raw staging tables (`stage` reads them there); reference codes come from the DB.

    `step_seconds` splits the time: fetch (the feed from S3 to scratch), normalise, load (COPY).
    """
    from qfdmo.carte_db import load_reference_codes, load_run_files

    started = time.perf_counter()
    nomenclature = _nomenclature(run)
    with _connect(dsn) as conn:
        reference = load_reference_codes(conn)
    context = NormalisationContext(nomenclature=json.loads(nomenclature) if nomenclature else {})
    with scratch_dir(scratch_base) as scratch:
        mark = time.perf_counter()
        raw = run.local_copy(RAW_FILE, scratch)
        seconds = {"fetch": time.perf_counter() - mark}
        mark = time.perf_counter()
        files = scratch / "files"
        report = normalise_feed(declaration, raw, reference, files, context).to_dict()
        seconds["normalise"] = time.perf_counter() - mark
        normalised = Normalised.from_dict(
            {
                **report,
                "warnings": _top(report.get("warnings", {})),
                "unknown_values": {kind: _top(values) for kind, values in report.get("unknown_values", {}).items()},
                "rejections": _top(report.get("rejections", {}), limit=50),
            }
        )
        if not normalised.acteurs_written:
            # Nothing usable is a configuration or feed problem, not "every acteur left": stop here.
            reasons = ", ".join(f"{reason} ({n})" for reason, n in normalised.rejections.items()) or "none"
            raise PipelineError(f"all {normalised.rows_read} rows of the feed were rejected; reasons: {reasons}")
        mark = time.perf_counter()
        # Two connections: propositions.tsv (the largest file) loads on the second meanwhile.
        with _connect(dsn) as conn, _connect(dsn) as second_conn:
            load_run_files(conn, run_key, files, second_conn)
        seconds["load"] = time.perf_counter() - mark
    return normalised.model_copy(update={
        "seconds": round(time.perf_counter() - started, 3),
        "step_seconds": {k: round(v, 3) for k, v in seconds.items()},
    })


def needs_approval(to_deactivate: int, active_before: int, max_deactivation_share: float) -> bool:
    """True when the run would set more than `max_deactivation_share` of the ACTIF acteurs SUPPRIME.

    A source with no ACTIF acteur yet (first load) never needs approval.
    """
    if active_before <= 0:
        return False
    return to_deactivate / active_before > max_deactivation_share


def stage(declaration: SourceDeclaration, run_key: str, dsn: str, max_deactivation_share: float) -> Staged:
    """Merge and check the rows the normalise step loaded into staging, diff them against
    qfdmo_acteur, decide the guard."""
    from qfdmo.carte_db import stage as stage_run

    started = time.perf_counter()
    # Two connections: the propositions are merged on the second while the first merges the acteurs.
    with _connect(dsn) as conn, _connect(dsn) as second_conn:
        result = stage_run(conn, run_key, None, declaration.source_codes, second_conn)
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


@dataclass(frozen=True)
class Finished:
    """What the cleanup did with a run's data."""

    removed: int  # objects of the run's data removed (a run that ended well)
    kept_until: datetime | None  # a failed run's data is kept until then
    swept: int  # other runs' kept data removed because past its date


def finish(
    run_key: str,
    dsn: str,
    run: RunData,
    *,
    settled: bool,
    dag_id: str = "",
    run_id: str = "",
    outcome: str = "",
    retention_days: float = 0.0,
    sweep_with: Callable[[str], RunData] | None = None,
) -> Finished:
    """The end of every run, whatever happened: drop its staging tables; remove its data when the run
    is `settled` (ended well), else keep it `retention_days` days (its normalised rows, still in
    staging, are first copied beside the feed under `normalised/`); then, with `sweep_with`, remove
    the kept data of older runs past their date.

    A database or S3 error is raised after the staging tables are handled: the cleanup task then
    fails, visibly. Without qfdmo_platform.kept_run (platform migrations not applied), a failed
    run's data stays and nothing is swept (a warning says so): data is never removed by doubt.
    """
    from qfdmo.carte_db import drop_staging
    from qfdmo.carte_db.staging import export_run_files

    removed, kept_until, swept = 0, None, 0
    with _connect(dsn) as conn:
        try:
            if settled:
                removed = run.delete()
                _without_table(lambda: retention.release(conn, run))
            else:
                export_run_files(conn, run_key, lambda name: run.writer(f"{NORMALISED_DIR}/{name}"))
                kept_until = _without_table(lambda: retention.keep(conn, run, dag_id, run_id, outcome,
                                                                   retention_days))
        finally:
            drop_staging(conn, run_key)
        if sweep_with is not None:
            swept = _without_table(lambda: retention.sweep(conn, sweep_with)) or 0
    return Finished(removed=removed, kept_until=kept_until, swept=swept)


def _without_table(work: Callable[[], T]) -> T | None:
    try:
        return work()
    except psycopg.errors.UndefinedTable as exc:
        log.warning("%s: run data retention needs the platform migrations "
                    "(python -m qfdmo.carte_db migrate --platform-only)", exc)
        return None
