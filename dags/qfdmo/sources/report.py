"""The normalisation report: small, JSON-serialisable, built while rows stream through."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_EXAMPLES = 5
_MAX_VALUE_CHARS = 200


def _short(value: object) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= _MAX_VALUE_CHARS else s[:_MAX_VALUE_CHARS] + "…"


@dataclass
class NormalisationReport:
    """Counts of one normalisation run.

    rows_read / rows_written / rows_rejected count feed rows (a row written produced at least
    one acteur); acteurs_written counts acteur lines (an OCAB row naming two eco-organismes
    writes two). rejections counts rejected acteurs by reason (an OCAB row may have one
    rejected eco-organisme and one written).
    """

    source: str
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    acteurs_written: int = 0
    propositions_written: int = 0
    labels_written: int = 0
    acteur_services_written: int = 0
    duplicates: int = 0
    processes: int = 1  # processes that normalised the feed
    rejections: Counter[str] = field(default_factory=Counter)
    rejection_examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    warnings: Counter[str] = field(default_factory=Counter)
    unknown_values: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    seconds: float = 0.0

    def reject(self, reason: str, row_number: int, identifier: object, value: object) -> None:
        self.rejections[reason] += 1
        examples = self.rejection_examples[reason]
        if len(examples) < MAX_EXAMPLES:
            examples.append({"row": row_number, "identifier": _short(identifier), "value": _short(value)})

    def unknown(self, kind: str, value: object) -> None:
        self.unknown_values[kind][_short(value)] += 1

    def merge(self, part: NormalisationReport, row_number: Callable[[int], int]) -> None:
        """Add the counts of `part` (the report of a later part of the same feed), its examples
        renumbered with `row_number` while fewer than MAX_EXAMPLES are kept. `duplicates` is
        left to the caller: a duplicate may span two parts."""
        for name in ("rows_read", "rows_written", "rows_rejected", "acteurs_written", "propositions_written",
                     "labels_written", "acteur_services_written"):
            setattr(self, name, getattr(self, name) + getattr(part, name))
        self.rejections.update(part.rejections)
        self.warnings.update(part.warnings)
        for kind, values in part.unknown_values.items():
            self.unknown_values[kind].update(values)
        for reason, examples in part.rejection_examples.items():
            kept = self.rejection_examples[reason]
            for example in examples[: MAX_EXAMPLES - len(kept)]:
                kept.append({**example, "row": row_number(example["row"])})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["rejections"] = dict(self.rejections.most_common())
        data["rejection_examples"] = {k: list(v) for k, v in self.rejection_examples.items()}
        data["warnings"] = dict(self.warnings.most_common())
        data["unknown_values"] = {k: dict(v.most_common()) for k, v in self.unknown_values.items()}
        data["seconds"] = round(self.seconds, 3)
        return data
