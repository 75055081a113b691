"""Step "normalise": raw feed rows → the four run files (qfdmo.carte_db.run_files).

Rows stream through: memory stays flat whatever the feed size (apart from one 64-bit hash per
identifiant_unique, kept to count duplicates). Values that repeat across rows (types, product
lists, flags, labels, public…) are resolved once per distinct combination and cached
(`combinations`); values that are unique per row (names, addresses, identifiers) go through cheap
compiled-regex rules (`rules`); `row` assembles an acteur; the words are in `vocabulary`, the
formats in `formats`, the inputs and their check in `configuration`.

A row that cannot be used is rejected with a reason; an unexpected exception while handling a
row becomes the rejection "internal error: <type>" and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qfdmo.carte_db.run_files import RunFileWriter
from qfdmo.sources.configuration import (
    ConfigurationError,
    NormalisationContext,
    ReferenceCodesLike,
    check_configuration,
    check_context,
)
from qfdmo.sources.declaration import SourceDeclaration
from qfdmo.sources.formats import feed_format
from qfdmo.sources.mapping import load_mapping
from qfdmo.sources.report import NormalisationReport
from qfdmo.sources.row import RowNormaliser

__all__ = ["ConfigurationError", "NormalisationContext", "ReferenceCodesLike", "check_configuration", "normalise"]


def normalise(declaration: SourceDeclaration, rows: Iterable[Any], reference: ReferenceCodesLike, run_dir: Path,
              context: NormalisationContext | None = None, *, first_row_number: int = 1,
              seen: set[bytes] | None = None) -> NormalisationReport:
    """Stream `rows` (raw feed dicts) into run_dir/{acteurs,propositions,labels,acteur_services}.tsv.

    Rows are numbered from `first_row_number` (a part of a feed normalised on its own starts
    elsewhere); `seen` collects the digests of the identifiant_unique written (duplicates are
    counted against it). Raises ConfigurationError (before reading any row) when the
    declaration or its mapping targets codes absent from `reference`, or when the format needs
    context the run lacks (a nomenclature). Never raises because of a row's content.
    """
    started = time.perf_counter()
    context = context or NormalisationContext()
    mapping = load_mapping(declaration.product_mapping)
    check_configuration(declaration, reference, mapping)
    check_context(declaration, context)
    report = NormalisationReport(source=declaration.code)
    raw_identifier = feed_format(declaration.format).identifier
    with RunFileWriter(Path(run_dir)) as out:
        normaliser = RowNormaliser(declaration, reference, mapping, context, report,
                                   set() if seen is None else seen, out)
        row_number = first_row_number - 1
        for row_number, raw in enumerate(rows, start=first_row_number):
            try:
                written = normaliser.row(row_number, raw)
            except Exception as exc:  # one bad row must not stop the run; it is counted instead
                report.reject(f"internal error: {type(exc).__name__}", row_number,
                              raw_identifier(raw) if isinstance(raw, dict) else "", str(exc))
                written = 0
            if written:
                report.rows_written += 1
            else:
                report.rows_rejected += 1
        report.rows_read = row_number - first_row_number + 1
    report.acteurs_written = out.acteurs
    report.propositions_written = out.propositions
    report.labels_written = out.labels
    report.acteur_services_written = out.acteur_services
    report.seconds = time.perf_counter() - started
    return report
