"""What the normaliser is given besides the rows: the declaration, its product mapping, the carte's
reference codes and the run's context; and the check, before any row is read, that every code
they can produce exists in the carte's reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from qfdmo.sources import vocabulary as words
from qfdmo.sources.declaration import SourceDeclaration
from qfdmo.sources.formats import feed_format
from qfdmo.sources.mapping import ProductMapping, load_mapping


class ReferenceCodesLike(Protocol):
    """What normalise needs from qfdmo.carte_db.ReferenceCodes."""

    sources: frozenset[str]
    acteur_types: frozenset[str]
    actions: frozenset[str]
    sous_categories: frozenset[str]
    labels: frozenset[str]
    acteur_services: frozenset[str]


class ConfigurationError(ValueError):
    """The declaration or its mapping names codes the carte reference does not know."""


@dataclass(frozen=True)
class NormalisationContext:
    """Run-time inputs besides the rows.

    nomenclature: waste code → label (SINOE's dataset sinoe-r-nomenclature-dechets); required by
    the formats whose `needs_nomenclature` is set.
    """

    nomenclature: Mapping[str, str] = field(default_factory=dict)


def check_configuration(declaration: SourceDeclaration, reference: ReferenceCodesLike,
                        mapping: ProductMapping | None = None) -> None:
    """Raise ConfigurationError listing every declared code absent from the reference."""
    mapping = mapping or load_mapping(declaration.product_mapping)
    problems = []

    def check(kind: str, codes: Iterable[str], known: frozenset[str]) -> None:
        missing = sorted(set(codes) - known)
        if missing:
            problems.append(f"{kind}: {', '.join(missing)}")

    check("sources", declaration.source_codes, reference.sources)
    check(f"sous-categories of mapping {mapping.name}", mapping.codes(), reference.sous_categories)
    defaults = declaration.defaults
    check("acteur type", [defaults.acteur_type] if defaults.acteur_type else [], reference.acteur_types)
    labels = [*defaults.labels, *([declaration.label_bonus_reparation] if declaration.label_bonus_reparation else [])]
    check("labels", labels, reference.labels)
    actions = {*defaults.actions, words.REPARER, words.TRIER,
               words.RAPPORTER if declaration.returnable_objects else words.DONNER}
    check("actions", actions, reference.actions)
    check("acteur services", {*defaults.acteur_services, words.SERVICE_DE_REPARATION, words.STRUCTURE_DE_COLLECTE},
          reference.acteur_services)
    check("acteur types of the points d'apport vocabulary", set(words.ACTEUR_TYPES.values()), reference.acteur_types)
    if problems:
        raise ConfigurationError(
            f"source {declaration.code}: codes absent from the carte reference — " + "; ".join(problems)
        )


def check_context(declaration: SourceDeclaration, context: NormalisationContext) -> None:
    """Raise ConfigurationError when the declaration's format needs context the run lacks."""
    if feed_format(declaration.format).needs_nomenclature and not context.nomenclature:
        raise ConfigurationError(
            f"source {declaration.code}: format {declaration.format} needs context.nomenclature"
        )
