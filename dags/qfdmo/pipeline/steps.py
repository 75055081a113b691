"""The steps of a source DAG as plain functions (no Airflow): each takes references (a run
directory, a run key, a DSN) and returns a small JSON-serialisable dict of counts and timings,
which is what travels between tasks. Bulk data stays in files and staging tables.

    download -> normalise -> stage (+ guard decision) -> [approval] -> apply ; finish always
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
from typing import Any
from urllib.parse import urlsplit

import psycopg

from qfdmo.feeds import HttpClient, redact_url
from qfdmo.feeds import download as download_feed
from qfdmo.feeds.readers import SINOE_NOMENCLATURE_DATASET
from qfdmo.pipeline import fingerprint as fp
from qfdmo.pipeline.parallel_normalise import normalise_feed
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


def download(
    declaration: SourceDeclaration, endpoint_url: str | None, run_dir: Path, client: HttpClient | None = None
) -> dict[str, Any]:
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
    return {
        "url": redact_url(url),
        "feed_sha256": feed,
        "pages": result.pages,
        "total": result.total,
        "bytes": result.bytes,
        "requests": result.requests,
        "retries": result.retries,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, default=str), encoding="utf-8")


def _skipped_normalise(record: dict[str, Any], started: float) -> dict[str, Any]:
    report = dict(record["summary"].get("normalise") or {})
    report.update(skipped=True, reason=fp.UNCHANGED_REASON, seconds=round(time.perf_counter() - started, 3))
    report["previous"] = {"stage": record["summary"].get("stage") or {},
                          "inactive": record["summary"].get("inactive", 0),
                          "active": fp.active_count(record["witness"])}
    return report


def normalise(
    declaration: SourceDeclaration, run_dir: Path, dsn: str, downloaded: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Normalise `<run_dir>/raw.jsonl` into the four staging files; reference codes come from the DB.

    With `downloaded` (what `download` returned), first checks the unchanged-input fast path
    (qfdmo.pipeline.fingerprint): same inputs as the last applied run and the acteurs untouched
    since then -> returns the last run's counts with `skipped: True`, and normalises nothing.
    """
    from qfdmo.carte_db import load_reference_codes

    started = time.perf_counter()
    nomenclature_file = run_dir / NOMENCLATURE_FILE
    nomenclature_text = nomenclature_file.read_text(encoding="utf-8") if nomenclature_file.exists() else ""
    fingerprint_file = run_dir / fp.FINGERPRINT_FILE
    fingerprint_file.unlink(missing_ok=True)
    with _connect(dsn) as conn:
        reference = load_reference_codes(conn)
        if downloaded and downloaded.get("feed_sha256"):
            run_fingerprint = fp.run_fingerprint(
                feed=downloaded["feed_sha256"],
                endpoint_url="",  # in feed_sha256
                declaration=declaration.model_dump(mode="json"),
                reference=dataclasses.asdict(reference),
                nomenclature=nomenclature_text,
                code=fp.code_version(),
            )
            record = fp.read_record(conn, declaration.code)
            if record is not None and record["fingerprint"] == run_fingerprint:
                if record["witness"] == fp.witness(conn, declaration.source_codes):
                    log.info("%s: same inputs as the last applied run, acteurs untouched: skipping", declaration.code)
                    return _skipped_normalise(record, started)
                log.info("%s: same inputs but the acteurs changed since the last apply: full path", declaration.code)
            _write_json(fingerprint_file, {"fingerprint": run_fingerprint})
    context = NormalisationContext(nomenclature=json.loads(nomenclature_text) if nomenclature_text else {})
    report = normalise_feed(declaration, run_dir / RAW_FILE, reference, run_dir, context).to_dict()
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
    if fingerprint_file.exists():
        recorded = _read_json(fingerprint_file)
        recorded["normalise"] = {k: v for k, v in report.items() if k != "seconds"}
        _write_json(fingerprint_file, recorded)
    return report


def needs_approval(to_deactivate: int, active_before: int, max_deactivation_share: float) -> bool:
    """True when the run would set more than `max_deactivation_share` of the ACTIF acteurs SUPPRIME.

    A source with no ACTIF acteur yet (first load) never needs approval.
    """
    if active_before <= 0:
        return False
    return to_deactivate / active_before > max_deactivation_share


def stage(
    declaration: SourceDeclaration,
    run_dir: Path,
    run_key: str,
    dsn: str,
    max_deactivation_share: float,
    normalised: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """COPY the normalised files into staging, diff them against qfdmo_acteur, decide the guard.

    When normalise skipped the run (unchanged inputs), stages nothing and reports the diff an
    unchanged feed gives: every acteur unchanged (INACTIF ones kept), nothing to deactivate.
    """
    from qfdmo.carte_db import stage as stage_run

    started = time.perf_counter()
    if normalised and normalised.get("skipped"):
        previous = normalised.get("previous") or {}
        acteurs = int((previous.get("stage") or {}).get("acteurs") or 0)
        inactive = int(previous.get("inactive") or 0)
        return {
            "run_key": run_key,
            "skipped": True,
            "reason": normalised.get("reason", fp.UNCHANGED_REASON),
            "rows": (previous.get("stage") or {}).get("rows", {}),
            "acteurs": acteurs,
            "duplicates_merged": (previous.get("stage") or {}).get("duplicates_merged", 0),
            "diff": {"new": 0, "changed": 0, "unchanged": acteurs - inactive, "inactive": inactive,
                     "to_deactivate": 0, "active_before": previous.get("active", 0), "deactivation_share": 0.0,
                     "examples": {}, "changed_columns": {}},
            "seconds": {},
            "max_deactivation_share": max_deactivation_share,
            "needs_approval": False,
            "seconds_total": round(time.perf_counter() - started, 3),
        }
    # Two connections: the propositions are staged on the second while the first stages the acteurs.
    with _connect(dsn) as conn, _connect(dsn) as second_conn:
        result = stage_run(conn, run_key, run_dir, declaration.source_codes, second_conn)
    staged = result.as_dict()
    diff = result.diff
    staged["max_deactivation_share"] = max_deactivation_share
    staged["needs_approval"] = needs_approval(diff.to_deactivate, diff.active_before, max_deactivation_share)
    staged["seconds_total"] = round(time.perf_counter() - started, 3)
    fingerprint_file = run_dir / fp.FINGERPRINT_FILE
    if fingerprint_file.exists():
        recorded = _read_json(fingerprint_file)
        recorded["stage"] = {k: staged[k] for k in ("rows", "acteurs", "duplicates_merged")}
        _write_json(fingerprint_file, recorded)
    return staged


def apply(
    declaration: SourceDeclaration,
    run_key: str,
    dsn: str,
    run_dir: Path | None = None,
    staged: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the staged run into the carte tables in one transaction, then drop the staging tables.

    Then records the run's fingerprint (from `<run_dir>/fingerprint.json`) with the acteurs'
    witness, for the next run's fast path. A skipped run (`staged` says so) writes nothing.
    """
    from qfdmo.carte_db import apply as apply_run
    from qfdmo.carte_db import drop_staging

    started = time.perf_counter()
    if staged and staged.get("skipped"):
        return {"skipped": True, "reason": staged.get("reason", fp.UNCHANGED_REASON), "diff": staged["diff"],
                "rows_written": {}, "total_rows_written": 0, "seconds": 0.0,
                "seconds_total": round(time.perf_counter() - started, 3)}
    recorded = _read_json(run_dir / fp.FINGERPRINT_FILE) if run_dir is not None else {}
    with _connect(dsn) as conn:
        result = apply_run(conn, run_key, declaration.source_codes)
        drop_staging(conn, run_key)
        try:
            if {"fingerprint", "normalise", "stage"} <= recorded.keys():
                fp.write_record(
                    conn,
                    declaration.code,
                    recorded["fingerprint"],
                    fp.witness(conn, declaration.source_codes),
                    {"normalise": recorded["normalise"], "stage": recorded["stage"], "inactive": result.diff.inactive},
                )
            else:
                fp.forget_record(conn, declaration.code)
        except psycopg.Error as exc:  # the apply is committed; the next run just takes the full path
            log.warning("could not record the applied feed of %s: %s", declaration.code, exc)
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
