"""The run files: the four COPY text files a normalisation writes and `stage()` loads.

Their names and columns are declared in `staging_format` (the contract both sides import); this
module writes them, and it is the only writer: the normaliser, the tests and the benches all go
through `RunFileWriter`, so what the ingestion tests load is what production writes.

PostgreSQL COPY text format: UTF-8, tab separated, no header, `\\N` = NULL, backslash escapes
for backslash, tab, newline and carriage return (NUL cannot be stored in PostgreSQL text: it is
dropped). Text columns are '' when absent (never NULL); booleans are t/f/\\N; floats use a dot.

Speed: most acteurs share their links with many others (same actions, products, labels), so the
link lines are built once per combination (`Links`) and only the identifiant is glued on per
acteur; lines are gathered and written a few thousand at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

from qfdmo.carte_db.staging_format import (
    ACTEUR_COLUMNS,
    ACTEUR_SERVICE_COLUMNS,
    ACTEUR_SERVICES_FILE,
    ACTEURS_FILE,
    LABEL_COLUMNS,
    LABELS_FILE,
    NULL,
    PROPOSITION_COLUMNS,
    PROPOSITIONS_FILE,
)

__all__ = ["NULL", "Links", "RunFileWriter", "copy_text", "escape"]

# Links writes an identifiant_unique followed by the codes of one link, in this order.
if (PROPOSITION_COLUMNS, LABEL_COLUMNS, ACTEUR_SERVICE_COLUMNS) != (
    ("identifiant_unique", "action_code", "sous_categorie_code"), ("identifiant_unique", "label_code"),
    ("identifiant_unique", "acteur_service_code"),
):
    raise ImportError("proposition/label/acteur service columns changed: update Links")
_IDENTIFIANT = ACTEUR_COLUMNS.index("identifiant_unique")


def escape(text: str) -> str:
    """One text value in COPY text format (NUL dropped)."""
    if "\\" in text:
        text = text.replace("\\", "\\\\")
    if "\t" in text:
        text = text.replace("\t", "\\t")
    if "\n" in text:
        text = text.replace("\n", "\\n")
    if "\r" in text:
        text = text.replace("\r", "\\r")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text


def copy_text(value: object) -> str:
    """A Python value as the writer's input text: None -> NULL, bool -> t/f, numbers with str()."""
    if value.__class__ is str:
        return value  # type: ignore[return-value]  # the class test is a str check mypy cannot read
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


class Links:
    """An acteur's lines in the three link files, without its identifiant_unique.

    Built once per distinct combination and shared by every acteur that has it; each part is
    kept as the escaped tail of its lines (`"\\t<action>\\t<sous_categorie>"`, `"\\t<label>"`).
    """

    __slots__ = ("acteur_services", "labels", "propositions")

    def __init__(
        self,
        propositions: Iterable[tuple[str, str]] = (),
        labels: Iterable[str] = (),
        acteur_services: Iterable[str] = (),
    ) -> None:
        self.propositions = tuple(f"\t{escape(action)}\t{escape(code)}" for action, code in propositions)
        self.labels = tuple(f"\t{escape(code)}" for code in labels)
        self.acteur_services = tuple(f"\t{escape(code)}" for code in acteur_services)


NO_LINKS = Links()


class RunFileWriter:
    """The four run files of `run_dir`; use as a context manager (or call close()).

    >>> with RunFileWriter(run_dir) as out:
    ...     out.write_values(acteur_values, Links([("trier", "vetement")], ["ess"], ["structure_de_collecte"]))

    Counts the lines written: `acteurs`, `propositions`, `labels`, `acteur_services`.
    """

    BATCH = 4096  # acteurs per write(): one write per few thousand lines costs far less than one per line

    def __init__(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.acteurs = self.propositions = self.labels = self.acteur_services = 0
        self._files: list[IO[str]] = []
        try:
            for name in (ACTEURS_FILE, PROPOSITIONS_FILE, LABELS_FILE, ACTEUR_SERVICES_FILE):
                self._files.append(open(run_dir / name, "w", encoding="utf-8", newline="", buffering=1 << 20))
        except BaseException:
            self._close_files()
            raise
        self._pending: list[list[str]] = [[], [], [], []]
        self._acteur_lines, self._proposition_lines, self._label_lines, self._service_lines = (
            p.append for p in self._pending
        )

    def write(self, acteur: Sequence[str], links: Links = NO_LINKS) -> None:
        """One acteur given as one-line text (values in ACTEUR_COLUMNS order, NULL for a null), and
        its link lines: what the normaliser gives (rules.text removes control characters).

        Backslashes, newlines, carriage returns and NUL are escaped here; a tab inside a value is not
        looked for (that is one more full scan of every line, measurably slower: README, "Règles de
        normalisation"; stage() would refuse such a line, one column too many): values that may hold
        one go through write_values().
        """
        line = "\t".join(acteur)
        identifiant = acteur[_IDENTIFIANT]
        # Usual case: nothing to escape, which cheap C-level scans tell.
        if line.count("\\") != acteur.count(NULL) or "\n" in line or "\r" in line or "\x00" in line:
            line = "\t".join([v if v == NULL else escape(v) for v in acteur])
            identifiant = escape(identifiant)
        self._write(line, identifiant, links)

    def write_values(self, acteur: Sequence[object], links: Links = NO_LINKS) -> None:
        """One acteur given as any values (text, None, bool, int, float), each escaped as needed."""
        values = [copy_text(v) for v in acteur]
        self._write("\t".join([v if v == NULL else escape(v) for v in values]), escape(values[_IDENTIFIANT]), links)

    def _write(self, line: str, identifiant: str, links: Links) -> None:
        self._acteur_lines(line)
        self.acteurs += 1
        glue = "\n" + identifiant
        if links.propositions:
            self._proposition_lines(identifiant + glue.join(links.propositions))
            self.propositions += len(links.propositions)
        if links.labels:
            self._label_lines(identifiant + glue.join(links.labels))
            self.labels += len(links.labels)
        if links.acteur_services:
            self._service_lines(identifiant + glue.join(links.acteur_services))
            self.acteur_services += len(links.acteur_services)
        if len(self._pending[0]) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        for file, lines in zip(self._files, self._pending, strict=True):
            if lines:
                file.write("\n".join(lines))
                file.write("\n")
                lines.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._close_files()

    def _close_files(self) -> None:
        for file in self._files:
            file.close()

    def __enter__(self) -> RunFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
