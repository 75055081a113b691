"""Format of the normalised run files (written by qfdmo.sources, read by stage()).

PostgreSQL COPY text format: UTF-8, tab separated, no header, `\\N` = NULL,
backslash escapes for backslash, tab, newline and carriage return. Text columns
are '' when absent (never NULL); booleans are t/f/\\N; floats use a dot.
The column order below is the contract: both sides import these constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

ACTEURS_FILE = "acteurs.tsv"
PROPOSITIONS_FILE = "propositions.tsv"
LABELS_FILE = "labels.tsv"
ACTEUR_SERVICES_FILE = "acteur_services.tsv"

ACTEUR_COLUMNS: tuple[str, ...] = (
    "row_number",
    "identifiant_unique",
    "identifiant_externe",
    "source_code",
    "acteur_type_code",
    "nom",
    "nom_commercial",
    "adresse",
    "adresse_complement",
    "code_postal",
    "ville",
    "url",
    "email",
    "telephone",
    "siret",
    "siren",
    "description",
    "horaires_osm",
    "horaires_description",
    "consignes_dacces",
    "public_accueilli",
    "reprise",
    "exclusivite_de_reprisereparation",
    "uniquement_sur_rdv",
    "lieu_prestation",
    "latitude",
    "longitude",
)
PROPOSITION_COLUMNS: tuple[str, ...] = (
    "identifiant_unique",
    "action_code",
    "sous_categorie_code",
)
LABEL_COLUMNS: tuple[str, ...] = ("identifiant_unique", "label_code")
ACTEUR_SERVICE_COLUMNS: tuple[str, ...] = ("identifiant_unique", "acteur_service_code")

FILES: dict[str, tuple[str, ...]] = {
    ACTEURS_FILE: ACTEUR_COLUMNS,
    PROPOSITIONS_FILE: PROPOSITION_COLUMNS,
    LABELS_FILE: LABEL_COLUMNS,
    ACTEUR_SERVICES_FILE: ACTEUR_SERVICE_COLUMNS,
}

NULL = "\\N"
# Fast path of format_row(): fields are joined with NUL (which PostgreSQL text
# can never hold) and NULLs written as SOH, so the four escapes run once per
# line at C speed instead of once per field.
_SEP = "\x00"
_NULL_MARK = "\x01"


def escape(text: str) -> str:
    """Escape one text value for COPY text format (NUL bytes are dropped)."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\t" in text:
        text = text.replace("\t", "\\t")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    if _SEP in text:
        text = text.replace(_SEP, "")
    return text


def format_value(value: Any) -> str:
    """One field: None -> \\N, bool -> t/f, numbers with str(), text escaped."""
    if value.__class__ is str:
        return escape(value)
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


def _plain(value: Any) -> str:
    if value is None:
        return _NULL_MARK
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


def format_row(values: Sequence[Any]) -> str:
    """One line, with its trailing newline."""
    line = _SEP.join([v if v.__class__ is str else _plain(v) for v in values])
    if line.count(_SEP) != len(values) - 1 or line.count(_NULL_MARK) != values.count(None):
        # A value holds NUL or SOH itself: escape field by field.
        return "\t".join([format_value(v) for v in values]) + "\n"
    if "\\" in line:
        line = line.replace("\\", "\\\\")
    if "\t" in line:
        line = line.replace("\t", "\\t")
    if "\n" in line:
        line = line.replace("\n", "\\n")
    if "\r" in line:
        line = line.replace("\r", "\\r")
    if _NULL_MARK in line:
        line = line.replace(_NULL_MARK, NULL)
    return line.replace(_SEP, "\t") + "\n"


class TsvWriter:
    """Buffered writer of one run file; use as a context manager.

    >>> with TsvWriter(run_dir / LABELS_FILE) as w:
    ...     w.write_row(("refashion_123", "refashion"))
    """

    def __init__(self, path: Path, buffer_size: int = 1 << 20) -> None:
        self.path = path
        self.rows = 0
        self._file: IO[str] = open(path, "w", encoding="utf-8", newline="", buffering=buffer_size)

    def write_row(self, values: Sequence[Any]) -> None:
        self._file.write(format_row(values))
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
