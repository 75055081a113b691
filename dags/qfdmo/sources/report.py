"""The normalisation report: small, typed, built while rows stream through; `to_dict()` is its JSON
form (what the DAG's tasks pass on and the run report shows), `from_dict()` reads it back."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

MAX_EXAMPLES = 5
_MAX_VALUE_CHARS = 200
# Counts summed when the reports of the parts of one feed are merged.
_SUMMED = ("rows_read", "rows_written", "rows_rejected", "acteurs_written", "propositions_written",
           "labels_written", "acteur_services_written")


def _short(value: object) -> str:
    s = value if isinstance(value, str) else repr(value)
    return s if len(s) <= _MAX_VALUE_CHARS else s[:_MAX_VALUE_CHARS] + "…"


class RejectionExample(TypedDict):
    """One rejected row shown in the report (its JSON form as it is)."""

    row: int  # row number in the feed, from 1
    identifier: str  # what names the row (its id, else its nom), cut to 200 characters
    value: str  # the value that caused the rejection, cut likewise


@dataclass
class NormalisationReport:
    """Counts of one normalisation run.

    rows_read / rows_written / rows_rejected count feed rows (a row written produced at least
    one acteur); acteurs_written counts acteur lines (an OCAB row naming two eco-organismes
    writes two). rejections counts rejected acteurs by reason (an OCAB row may have one
    rejected eco-organisme and one written). unknown_values: kind (acteur_type, product_label,
    label, source, waste_code) → value → rows; warnings: kind → rows where a value was blanked.
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
    rejection_examples: dict[str, list[RejectionExample]] = field(default_factory=lambda: defaultdict(list))
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
        for name in _SUMMED:
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
        """The JSON form: counts by decreasing frequency, seconds to the millisecond."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["rejections"] = dict(self.rejections.most_common())
        data["rejection_examples"] = {k: [dict(e) for e in v] for k, v in self.rejection_examples.items()}
        data["warnings"] = dict(self.warnings.most_common())
        data["unknown_values"] = {k: dict(v.most_common()) for k, v in self.unknown_values.items()}
        data["seconds"] = round(self.seconds, 3)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormalisationReport:
        """The report `to_dict()` gave; keys that are not fields (added by a caller) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)} - {"rejections", "rejection_examples", "warnings",
                                                              "unknown_values"}
        report = cls(**{name: data[name] for name in names if name in data})
        report.rejections.update(data.get("rejections") or {})
        report.warnings.update(data.get("warnings") or {})
        for kind, values in (data.get("unknown_values") or {}).items():
            report.unknown_values[kind].update(values)
        for reason, examples in (data.get("rejection_examples") or {}).items():
            report.rejection_examples[reason].extend(
                RejectionExample(row=e["row"], identifier=e["identifier"], value=e["value"]) for e in examples
            )
        return report
