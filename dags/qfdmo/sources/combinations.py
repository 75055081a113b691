"""The categorical fields of a row (type, flags, products, labels, public, eco-organismes) → carte
codes, resolved once per distinct combination and cached.

These values repeat across rows (a feed has a few dozen combinations), so each combination costs
one dict lookup after its first row. Caches are bounded: a feed with endless variety clears them
rather than growing without limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from qfdmo.carte_db.run_files import NULL, Links
from qfdmo.sources import rules
from qfdmo.sources import vocabulary as words
from qfdmo.sources.configuration import ReferenceCodesLike
from qfdmo.sources.declaration import SourceDeclaration
from qfdmo.sources.mapping import ProductMapping

CACHE_LIMIT = 100_000
K = TypeVar("K")
V = TypeVar("V")

Codes = tuple[tuple[str, ...], tuple[str, ...]]  # (codes found, values not understood)
Flag = tuple[bool | None, str | None]  # rules.boolean: (value, warning)


def memo(cache: dict[K, V], raw: K, compute: Callable[[K], V]) -> V:
    """cache[raw], computed on a miss; unhashable raw values (lists, dicts) are not cached."""
    try:
        return cache[raw]
    except KeyError:
        if len(cache) >= CACHE_LIMIT:  # bounded memory on feeds with endless variety
            cache.clear()
        result = cache[raw] = compute(raw)
        return result
    except TypeError:
        return compute(raw)


@dataclass(frozen=True)
class Services:
    """What a distinct combination of type, flags, products and labels resolves to."""

    acteur_type: str
    digital: bool
    rejection: tuple[str, object] | None  # (reason, value shown)
    links: Links  # propositions, labels, acteur services
    unknown: tuple[tuple[str, str], ...]  # (kind, value)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Public:
    """What a distinct combination of public, reprise, service à domicile, exclusivité and rdv gives."""

    public_accueilli: str
    reprise: str
    exclusivite: str  # COPY text: t / f / NULL
    rdv: str
    lieu_prestation: str
    rejection: tuple[str, object] | None
    warnings: tuple[str, ...]


def _copy_bool(value: bool | None) -> str:
    return NULL if value is None else ("t" if value else "f")


class Combinations:
    """The caches and resolvers of one normalisation run."""

    def __init__(self, declaration: SourceDeclaration, reference: ReferenceCodesLike,
                 mapping: ProductMapping) -> None:
        self.declaration = declaration
        self.mapping = mapping
        self.labels_by_lower = {code.lower(): code for code in reference.labels}
        self.default_public = declaration.defaults.public_accueilli or ""
        self.services_cache: dict[tuple[Any, ...], Services] = {}
        self.public_cache: dict[tuple[Any, ...], Public] = {}
        self._resolved_cache: dict[tuple[Any, ...], Services] = {}
        self._type_cache: dict[Any, tuple[str, str]] = {}
        self._bool_cache: dict[Any, Flag] = {}
        self._labels_cache: dict[Any, Codes] = {}
        self._products_cache: dict[Any, Codes] = {}
        self._source_cache: dict[Any, Codes] = {}

    # --- services: type, flags, products, labels ---------------------------------------------

    def services(self, key: tuple[Any, ...]) -> Services:
        """`key`: the raw SERVICE_FIELDS of a row."""
        return memo(self.services_cache, key, self._services)

    def _services(self, key: tuple[Any, ...]) -> Services:
        # Each part is resolved through its own small cache, so a new combination of
        # already-seen values costs a few lookups; the result is interned on resolved values.
        type_raw, repair1, repair2, reuse, collect, products_raw, labels_raw = key
        type_code, type_text = memo(self._type_cache, type_raw, self._acteur_type)
        flags = tuple(memo(self._bool_cache, raw, rules.boolean) for raw in (repair1, repair2, reuse, collect))
        codes, unknown_products = memo(self._products_cache, products_raw, self._products)
        labels, unknown_labels = memo(self._labels_cache, (labels_raw, type_code == words.ESS), self._labels)
        resolved = (type_code, type_text, flags, codes, unknown_products, labels, unknown_labels)
        services = self._resolved_cache.get(resolved)
        if services is None:
            if len(self._resolved_cache) >= CACHE_LIMIT:
                self._resolved_cache.clear()
            services = self._resolved_cache[resolved] = self._build_services(resolved, products_raw)
        return services

    def _actions_and_services(self, flags: tuple[Flag, ...]) -> tuple[list[str], list[str]]:
        repair1, repair2, reuse, collect = flags
        actions = list(self.declaration.defaults.actions)
        services = list(self.declaration.defaults.acteur_services)
        if repair1[0] or repair2[0]:
            actions.append(words.REPARER)
            services.append(words.SERVICE_DE_REPARATION)
        if reuse[0]:
            actions.append(words.RAPPORTER if self.declaration.returnable_objects else words.DONNER)
            services.append(words.STRUCTURE_DE_COLLECTE)
        if collect[0]:
            actions.append(words.TRIER)
            services.append(words.STRUCTURE_DE_COLLECTE)
        return list(dict.fromkeys(actions)), list(dict.fromkeys(services))

    def _build_services(self, resolved: tuple[Any, ...], products_raw: object) -> Services:
        type_code, type_text, flags, codes, unknown_products, labels, unknown_labels = resolved
        actions, services = self._actions_and_services(flags)
        unknown: list[tuple[str, str]] = [] if type_code else [("acteur_type", type_text)]
        unknown.extend(("product_label", label) for label in unknown_products)
        unknown.extend(("label", label) for label in unknown_labels)
        rejection: tuple[str, object] | None = None
        if not type_code:
            rejection = ("unknown acteur type", type_text)
        elif not codes:
            shown = (rules.text(products_raw) if not isinstance(products_raw, list | tuple)
                     else "|".join(map(rules.text, products_raw)))
            rejection = ("no sous-categorie", shown)
        elif not actions:
            rejection = ("no action", "")
        return Services(
            acteur_type=type_code,
            digital=type_code == words.ACTEUR_DIGITAL,
            rejection=rejection,
            links=Links([(a, c) for a in actions for c in codes], labels, services),
            unknown=tuple(unknown),
            warnings=tuple(w for _, w in flags if w),
        )

    def _acteur_type(self, raw: object) -> tuple[str, str]:
        """Raw type label → (code or '' when unknown, label text)."""
        type_text = rules.text(raw)
        if not type_text:
            return self.declaration.defaults.acteur_type or "", ""
        return rules.acteur_type(type_text) or "", type_text

    def _products(self, raw: object) -> Codes:
        """Raw product list → (sous-categorie codes, unknown labels)."""
        if isinstance(raw, list | tuple):
            parts = [p for item in raw for p in rules.text(item).split(words.LIST_SEPARATOR)]
        else:
            parts = rules.text(raw).split(words.LIST_SEPARATOR)
        codes: list[str] = []
        unknown: list[str] = []
        for part in parts:
            label = part.strip()
            if not label or label.lower() in words.NULL_LIKE:
                continue
            found = self.mapping.lookup(label)
            if found is None:
                unknown.append(label)
                continue
            for code in found:
                if code not in codes:
                    codes.append(code)
        return tuple(codes), tuple(unknown)

    def _labels(self, key: tuple[object, bool]) -> Codes:
        raw, is_ess = key
        labels = list(self.declaration.defaults.labels)
        unknown: list[str] = []
        for part in rules.text(raw).split(words.LIST_SEPARATOR):
            label = rules.unaccented_key(part)
            if label in words.LABELS_IGNORED or label in words.NULL_LIKE:
                continue
            if label == words.BONUS_REPARATION:
                code = self.declaration.label_bonus_reparation
            else:
                code = self.labels_by_lower.get(label)
            if code is None:
                unknown.append(part.strip())
            elif code not in labels:
                labels.append(code)
        if is_ess and words.ESS not in labels:
            labels.append(words.ESS)
        return tuple(labels), tuple(unknown)

    # --- public, reprise, lieu de prestation -------------------------------------------------

    def public(self, key: tuple[Any, ...]) -> Public:
        """`key`: the raw PUBLIC_FIELDS of a row."""
        return memo(self.public_cache, key, self._public)

    def _public(self, key: tuple[Any, ...]) -> Public:
        public_raw, reprise_raw, domicile_raw, exclusivite_raw, rdv_raw = key
        public, public_warning = rules.public_accueilli(public_raw)
        if not public and rules.text(public_raw) == "":
            public = self.default_public
        rejection = None
        if public in words.PUBLICS_OUT_OF_SCOPE:
            rejection = (f"out of scope: public {public}", rules.text(public_raw))
        reprise, reprise_warning = rules.reprise(reprise_raw)
        exclusivite, exclusivite_warning = rules.boolean(exclusivite_raw)
        rdv, rdv_warning = rules.boolean(rdv_raw)
        warnings = tuple(w for w in (public_warning, reprise_warning, exclusivite_warning, rdv_warning) if w)
        return Public(public, reprise, _copy_bool(exclusivite), _copy_bool(rdv),
                      rules.lieu_prestation(domicile_raw), rejection, warnings)

    # --- eco-organismes named per row --------------------------------------------------------

    def source_codes(self, raw: object) -> Codes:
        """The declaration's per-row source column → (known source codes, unknown names)."""
        return memo(self._source_cache, raw, self._source_codes)

    def _source_codes(self, raw: object) -> Codes:
        known, unknown = [], []
        owned = self.declaration.source_codes
        for part in rules.text(raw).split(words.LIST_SEPARATOR):
            name = rules.unaccented_key(part).replace(" ", "_")
            if not name:
                continue
            code = self.declaration.source_code_prefix + name
            if code in owned:
                if code not in known:
                    known.append(code)
            else:
                unknown.append(part.strip())
        return tuple(known), tuple(unknown)
