"""Partner product label → sous-catégorie codes, from our `mappings/<name>.csv` files.

CSV format (UTF-8, header `partner_label,sous_categorie_code`): a label mapped to several codes
has several lines; a label with one line and an empty code is known and deliberately ignored.
Labels match after trim + lowercase + straight quotes; unaccented variants match too.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qfdmo.sources.declaration import MAPPINGS_DIR
from qfdmo.sources.rules import label_key, unaccented_key


class MappingError(ValueError):
    """A mapping file is missing, malformed or targets codes unknown to the reference."""


@dataclass(frozen=True)
class ProductMapping:
    name: str
    exact: dict[str, tuple[str, ...]]
    unaccented: dict[str, tuple[str, ...]]

    def codes(self) -> frozenset[str]:
        return frozenset(code for codes in self.exact.values() for code in codes)

    def lookup(self, label: str) -> tuple[str, ...] | None:
        """Codes for one partner label ((), when ignored), or None when the label is unknown."""
        key = label_key(label)
        found = self.exact.get(key)
        if found is None:
            found = self.unaccented.get(unaccented_key(key))
        return found

    def check_codes(self, known: Iterable[str]) -> None:
        missing = sorted(self.codes() - frozenset(known))
        if missing:
            raise MappingError(
                f"mapping {self.name}: sous-categorie codes absent from the reference: {', '.join(missing)}"
            )


def parse_mapping(path: Path) -> ProductMapping:
    exact: dict[str, list[str]] = {}
    codes: list[str] | tuple[str, ...]
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != ["partner_label", "sous_categorie_code"]:
                raise MappingError(f"{path.name}: header must be partner_label,sous_categorie_code")
            for line_number, line in enumerate(reader, start=2):
                if len(line) != 2:
                    raise MappingError(f"{path.name}:{line_number}: expected 2 fields, got {len(line)}")
                label, code = label_key(line[0]), line[1].strip()
                if not label:
                    raise MappingError(f"{path.name}:{line_number}: empty partner_label")
                codes = exact.setdefault(label, [])
                if code and code not in codes:
                    codes.append(code)
    except OSError as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from exc
    frozen = {label: tuple(codes) for label, codes in exact.items()}
    # Unaccented index: only keys that stay unambiguous once accents are dropped.
    unaccented: dict[str, tuple[str, ...]] = {}
    ambiguous: set[str] = set()
    for label, codes in frozen.items():
        key = unaccented_key(label)
        if key in unaccented and unaccented[key] != codes:
            ambiguous.add(key)
        unaccented.setdefault(key, codes)
    for key in ambiguous:
        del unaccented[key]
    return ProductMapping(path.stem, frozen, unaccented)


@functools.lru_cache(maxsize=16)
def load_mapping(name: str, directory: Path = MAPPINGS_DIR) -> ProductMapping:
    return parse_mapping(directory / f"{name}.csv")
