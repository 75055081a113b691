"""Step "normalise": raw feed rows → the four COPY files of a run (see the plan's contract).

Rows stream through: memory stays flat whatever the feed size (apart from one 64-bit hash per
identifiant_unique, kept to count duplicates). Values that repeat across rows (types, product
lists, flags, labels, public…) are resolved once per distinct combination and cached; values
that are unique per row (names, addresses, identifiers) go through cheap compiled-regex rules.

A row that cannot be used is rejected with a reason; an unexpected exception while handling a
row becomes the rejection "internal error: <type>" and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
    escape,
)
from qfdmo.sources import rules
from qfdmo.sources.declaration import SourceDeclaration
from qfdmo.sources.mapping import ProductMapping, load_mapping
from qfdmo.sources.report import NormalisationReport

BONUS_REPARATION = "agree bonus reparation"
LABELS_IGNORED = frozenset({"", "non applicable", "na", "n/a", "null", "aucun", "non", "none", "nan", "-"})
PRODUCT_SEPARATOR = "|"

# varchar(255) of the carte columns: identifiers that long are rejected (cutting them could merge
# two acteurs); nom, nom_commercial, adresse, adresse_complement, ville and telephone are cut.
_MAX_ID = 255

# The canonical order in which rows are built below; staging.ACTEUR_COLUMNS may order them
# differently (then a permutation is applied) but must hold the same names.
_BUILD_ORDER = (
    "row_number", "identifiant_unique", "identifiant_externe", "source_code", "acteur_type_code",
    "nom", "nom_commercial", "adresse", "adresse_complement", "code_postal", "ville", "url", "email",
    "telephone", "siret", "siren", "description", "horaires_osm", "horaires_description",
    "consignes_dacces", "public_accueilli", "reprise", "exclusivite_de_reprisereparation",
    "uniquement_sur_rdv", "lieu_prestation", "latitude", "longitude",
)
if sorted(ACTEUR_COLUMNS) != sorted(_BUILD_ORDER):
    raise ImportError(f"acteur columns changed: {sorted(set(ACTEUR_COLUMNS) ^ set(_BUILD_ORDER))}")
if (PROPOSITION_COLUMNS, LABEL_COLUMNS, ACTEUR_SERVICE_COLUMNS) != (
    ("identifiant_unique", "action_code", "sous_categorie_code"), ("identifiant_unique", "label_code"),
    ("identifiant_unique", "acteur_service_code"),
):
    raise ImportError("proposition/label/acteur service columns changed: update _Writers")
_PERMUTATION = None if tuple(ACTEUR_COLUMNS) == _BUILD_ORDER else [_BUILD_ORDER.index(c) for c in ACTEUR_COLUMNS]


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

    nomenclature: SINOE waste code → label (dataset sinoe-r-nomenclature-dechets); required
    for format sinoe.
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
    actions = {*defaults.actions, "reparer", "trier", "rapporter" if declaration.returnable_objects else "donner"}
    check("actions", actions, reference.actions)
    check("acteur services", {*defaults.acteur_services, "service_de_reparation", "structure_de_collecte"},
          reference.acteur_services)
    check("acteur types of the points d'apport vocabulary", set(rules.ACTEUR_TYPES.values()), reference.acteur_types)
    if problems:
        raise ConfigurationError(
            f"source {declaration.code}: codes absent from the carte reference — " + "; ".join(problems)
        )


class _Rejected(Exception):
    def __init__(self, reason: str, value: object) -> None:
        self.reason = reason
        self.value = value


@dataclass(frozen=True)
class _Services:
    """What a distinct combination of type, flags, products and labels resolves to."""

    acteur_type: str
    digital: bool
    rejection: tuple[str, object] | None
    proposition_suffixes: tuple[str, ...]  # "\t<action>\t<sous_categorie>"
    label_suffixes: tuple[str, ...]
    service_suffixes: tuple[str, ...]
    unknown: tuple[tuple[str, str], ...]  # (kind, value)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Public:
    public_accueilli: str
    reprise: str
    exclusivite: str
    rdv: str
    lieu_prestation: str
    rejection: tuple[str, object] | None
    warnings: tuple[str, ...]


def _copy_bool(value: bool | None) -> str:
    return NULL if value is None else ("t" if value else "f")


class _Normaliser:
    def __init__(self, declaration: SourceDeclaration, reference: ReferenceCodesLike,
                 mapping: ProductMapping, context: NormalisationContext, report: NormalisationReport,
                 seen: set[int]) -> None:
        self.declaration = declaration
        self.mapping = mapping
        self.context = context
        self.report = report
        self.labels_by_lower = {code.lower(): code for code in reference.labels}
        self.services_cache: dict[tuple[Any, ...], _Services] = {}
        self.resolved_cache: dict[tuple[Any, ...], _Services] = {}
        self.type_cache: dict[Any, tuple[str, str]] = {}
        self.bool_cache: dict[Any, tuple[bool | None, str | None]] = {}
        self.labels_cache: dict[Any, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.public_cache: dict[tuple[Any, ...], _Public] = {}
        self.products_cache: dict[Any, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.seen = seen
        self.source_cache: dict[Any, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.adapt = {"pointsapport": _identity, "artisanat": self._adapt_artisanat, "sinoe": self._adapt_sinoe}[
            declaration.format
        ]
        defaults = declaration.defaults
        self.default_public = defaults.public_accueilli or ""
        # Points d'apport rows carry one BAN address line; the other formats, separate columns.
        self.ban_address = declaration.format == "pointsapport"

    # --- categorical resolution (cached per distinct combination) ----------------------------

    def _products(self, raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Raw product list → (sous-categorie codes, unknown labels)."""
        return _memo(self.products_cache, raw, self._resolve_products)

    def _resolve_products(self, raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if isinstance(raw, list | tuple):
            parts = [p for item in raw for p in rules.text(item).split(PRODUCT_SEPARATOR)]
        else:
            parts = rules.text(raw).split(PRODUCT_SEPARATOR)
        codes: list[str] = []
        unknown: list[str] = []
        for part in parts:
            label = part.strip()
            if not label or label.lower() in rules.NULL_LIKE:
                continue
            found = self.mapping.lookup(label)
            if found is None:
                unknown.append(label)
                continue
            for code in found:
                if code not in codes:
                    codes.append(code)
        return tuple(codes), tuple(unknown)

    def _resolve_labels(self, key: tuple[object, bool]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        raw, is_ess = key
        labels = list(self.declaration.defaults.labels)
        unknown: list[str] = []
        for part in rules.text(raw).split("|"):
            label = rules.unaccented_key(part)
            if label in LABELS_IGNORED or label in rules.NULL_LIKE:
                continue
            if label == BONUS_REPARATION:
                code = self.declaration.label_bonus_reparation
            else:
                code = self.labels_by_lower.get(label)
            if code is None:
                unknown.append(part.strip())
            elif code not in labels:
                labels.append(code)
        if is_ess and "ess" not in labels:
            labels.append("ess")
        return tuple(labels), tuple(unknown)

    def _acteur_type(self, raw: object) -> tuple[str, str]:
        """Raw type label → (code or '' when unknown, label text)."""
        type_text = rules.text(raw)
        if not type_text:
            return self.declaration.defaults.acteur_type or "", ""
        return rules.acteur_type(type_text) or "", type_text

    def _services(self, key: tuple[Any, ...]) -> _Services:
        # Each part is resolved through its own small cache, so a new combination of
        # already-seen values costs a few lookups; the result is interned on resolved values.
        type_raw, repair1, repair2, reuse, collect, products_raw, labels_raw = key
        type_code, type_text = _memo(self.type_cache, type_raw, self._acteur_type)
        repair1, repair2, reuse, collect = (_memo(self.bool_cache, raw, rules.boolean)
                                            for raw in (repair1, repair2, reuse, collect))
        codes, unknown_products = self._products(products_raw)
        labels, unknown_labels = _memo(self.labels_cache, (labels_raw, type_code == "ess"), self._resolve_labels)
        resolved = (type_code, type_text, repair1, repair2, reuse, collect, codes, unknown_products, labels,
                    unknown_labels)
        services = self.resolved_cache.get(resolved)
        if services is None:
            if len(self.resolved_cache) >= _CACHE_LIMIT:
                self.resolved_cache.clear()
            services = self.resolved_cache[resolved] = self._build_services(resolved, products_raw)
        return services

    def _build_services(self, resolved: tuple[Any, ...], products_raw: object) -> _Services:
        type_code, type_text, repair1, repair2, reuse, collect, codes, unknown_products, labels, unknown_labels = (
            resolved
        )
        warnings = tuple(w for _, w in (repair1, repair2, reuse, collect) if w)
        unknown: list[tuple[str, str]] = []
        if not type_code:
            unknown.append(("acteur_type", type_text))
        actions = list(self.declaration.defaults.actions)
        services = list(self.declaration.defaults.acteur_services)
        if repair1[0] or repair2[0]:
            actions.append("reparer")
            services.append("service_de_reparation")
        if reuse[0]:
            actions.append("rapporter" if self.declaration.returnable_objects else "donner")
            services.append("structure_de_collecte")
        if collect[0]:
            actions.append("trier")
            services.append("structure_de_collecte")
        actions = list(dict.fromkeys(actions))
        services = list(dict.fromkeys(services))
        unknown.extend(("product_label", label) for label in unknown_products)
        unknown.extend(("label", label) for label in unknown_labels)
        rejection: tuple[str, object] | None = None
        if not type_code:
            rejection = ("unknown acteur type", type_text)
        elif not codes:
            rejection = ("no sous-categorie", rules.text(products_raw) if not isinstance(products_raw, list | tuple)
                         else "|".join(map(rules.text, products_raw)))
        elif not actions:
            rejection = ("no action", "")
        return _Services(
            acteur_type=type_code,
            digital=type_code == "acteur_digital",
            rejection=rejection,
            proposition_suffixes=tuple(f"\t{a}\t{c}" for a in actions for c in codes),
            label_suffixes=tuple(f"\t{label}" for label in labels),
            service_suffixes=tuple(f"\t{s}" for s in services),
            unknown=tuple(unknown),
            warnings=warnings,
        )

    def _public(self, key: tuple[Any, ...]) -> _Public:
        public_raw, reprise_raw, domicile_raw, exclusivite_raw, rdv_raw = key
        warnings: list[str] = []
        public, warning = rules.public_accueilli(public_raw)
        if warning:
            warnings.append(warning)
        if not public and rules.text(public_raw) == "":
            public = self.default_public
        rejection = None
        if public in ("Professionnels", "Aucun"):
            rejection = (f"out of scope: public {public}", rules.text(public_raw))
        reprise, warning = rules.reprise(reprise_raw)
        if warning:
            warnings.append(warning)
        exclusivite, warning = rules.boolean(exclusivite_raw)
        if warning:
            warnings.append(warning)
        rdv, warning = rules.boolean(rdv_raw)
        if warning:
            warnings.append(warning)
        return _Public(public, reprise, _copy_bool(exclusivite), _copy_bool(rdv),
                       rules.lieu_prestation(domicile_raw), rejection, tuple(warnings))

    def _source_codes(self, raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Per-row source rule → (known source codes, unknown names)."""
        return _memo(self.source_cache, raw, self._resolve_source_codes)

    def _resolve_source_codes(self, raw: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        known, unknown = [], []
        owned = self.declaration.source_codes
        for part in rules.text(raw).split("|"):
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

    # --- format adapters: other formats → points d'apport column names -----------------------

    def _adapt_artisanat(self, row: dict[str, Any]) -> dict[str, Any]:
        identifier = row.get("id")
        if rules.text(identifier) == "":
            raise _Rejected("missing identifiant", identifier)
        enabled, _ = rules.boolean(row.get("is_enabled"))
        if enabled is False:
            raise _Rejected("disabled", row.get("is_enabled"))
        products = [row.get(c) for c in ("categorie", "categorie2", "categorie3")]
        return {
            "id_point_apport_ou_reparation": identifier,
            "nom_de_lorganisme": row.get("name"),
            "description": row.get("reparactor_description"),
            "adresse": row.get("address_1"),
            "adresse_complement": row.get("address_2"),
            "code_postal": row.get("zip_code"),
            "ville": row.get("zip_code_label"),
            "site_web": row.get("website"),
            "email": row.get("email"),
            "telephone": row.get("phone"),
            "siret": row.get("siret"),
            "latitudewgs84": row.get("latitude"),
            "longitudewgs84": row.get("longitude"),
            "horaires_description": row.get("reparactor_hours"),
            "produitsdechets_acceptes": tuple(p for p in products if rules.text(p)),
        }

    def _adapt_sinoe(self, row: dict[str, Any]) -> dict[str, Any]:
        nomenclature = self.context.nomenclature
        labels = []
        for code in rules.text(row.get("LST_TYPE_DECHET")).split("|"):
            code = code.strip()
            if not code or code.upper() == "NP":
                continue
            label = nomenclature.get(code)
            if label is None:
                self.report.unknown("waste_code", code)
            else:
                labels.append(label)
        lat = lon = None
        geopoint = rules.text(row.get("_geopoint"))
        if geopoint.count(",") == 1:
            lat, lon = geopoint.split(",")
        return {
            "id_point_apport_ou_reparation": row.get("C_SERVICE"),
            "nom_de_lorganisme": row.get("N_SERVICE"),
            "adresse": row.get("AD1_SITE"),
            "adresse_complement": row.get("AD2_SITE"),
            "code_postal": row.get("CP_SITE"),
            "ville": row.get("L_VILLE_SITE"),
            "telephone": row.get("TEL_SERVICE"),
            "public_accueilli": row.get("ORIGINE_DECHET_ACC"),
            "latitudewgs84": lat,
            "longitudewgs84": lon,
            "produitsdechets_acceptes": tuple(labels),
        }

    def _reject(self, source_codes: tuple[str, ...], reason: str, value: object, row_number: int,
                identifier: object) -> int:
        for _ in source_codes:  # one rejection per acteur the row would have given
            self.report.reject(reason, row_number, identifier, value)
        return 0

    # --- one row -------------------------------------------------------------------------------

    def row(self, row_number: int, raw: Any, out: _Writers) -> int:
        """Normalise one feed row; returns the number of acteurs written."""
        report = self.report
        if not isinstance(raw, dict):
            report.reject("invalid row: not an object", row_number, "", type(raw).__name__)
            return 0
        try:
            row = self.adapt(raw)
        except _Rejected as rejected:
            report.reject(rejected.reason, row_number, _identifier(raw), rejected.value)
            return 0
        get = row.get
        declaration = self.declaration

        if declaration.source_code is not None:
            source_codes: tuple[str, ...] = (declaration.source_code,)
        else:
            raw_source = raw.get(declaration.source_code_column)
            source_codes, unknown_sources = self._source_codes(raw_source)
            for name in unknown_sources:
                report.unknown("source", name)
                report.reject("unknown source", row_number, _identifier(row), name)
            if not unknown_sources and not source_codes:
                report.reject("unknown source", row_number, _identifier(row), "")
            if not source_codes:
                return 0

        # One C-level pass over the row per group of columns (much cheaper than one .get each).
        key = tuple(map(get, _SERVICE_COLUMNS))
        try:
            services = self.services_cache.get(key) or _memo(self.services_cache, key, self._services)
        except TypeError:  # an unhashable raw value (list, dict): resolved without the cache
            services = self._services(key)
        for kind, value in services.unknown:
            report.unknown(kind, value)
        warnings = report.warnings
        for warning in services.warnings:
            warnings[warning] += 1

        (nom, identifiant_externe, lat_raw, lon_raw, ban, siret_raw, siren_raw, telephone_raw, email_raw, url_raw,
         horaires_raw, nom_commercial, adresse_complement, description, horaires_description,
         consignes) = map(get, _ACTEUR_COLUMNS)
        text = rules.text
        nom = text(nom) if nom else ""
        identifiant_externe = text(identifiant_externe) if identifiant_externe else ""
        if not identifiant_externe:
            identifiant_externe = rules.identifiant_externe_from_nom(nom)
        identifier = identifiant_externe or nom

        if not nom:
            return self._reject(source_codes, "missing nom", "", row_number, identifier)
        if services.rejection is not None:
            reason, value = services.rejection
            return self._reject(source_codes, reason, value, row_number, identifier)

        key2 = tuple(map(get, _PUBLIC_COLUMNS))
        try:
            public = self.public_cache.get(key2) or _memo(self.public_cache, key2, self._public)
        except TypeError:
            public = self._public(key2)
        if public.rejection is not None:
            reason, value = public.rejection
            return self._reject(source_codes, reason, value, row_number, identifier)
        for warning in public.warnings:
            warnings[warning] += 1

        latitude: float | None
        longitude: float | None
        if type(lat_raw) is float and type(lon_raw) is float and lat_raw and lon_raw \
                and -90.0 <= lat_raw <= 90.0 and -180.0 <= lon_raw <= 180.0:
            latitude, longitude = lat_raw, lon_raw  # the common case: JSON numbers
        else:
            latitude, warning = rules.coordinate(lat_raw, 90.0)
            if warning:
                warnings[warning] += 1
            longitude, warning = rules.coordinate(lon_raw, 180.0)
            if warning:
                warnings[warning] += 1
        if latitude is None or longitude is None:
            if not services.digital:
                return self._reject(source_codes, "missing location", f"{lat_raw!r}, {lon_raw!r}", row_number,
                                    identifier)
            latitude = longitude = None

        if services.digital:
            identifiant_externe += "_d"
        if len(identifiant_externe) > _MAX_ID:
            return self._reject(source_codes, "identifiant too long", identifiant_externe, row_number, identifier)

        # Address: one BAN line for the points d'apport, separate columns for the others.
        if self.ban_address:
            adresse, cp, ville, warning = rules.address(ban)
            if warning:
                warnings[warning] += 1
        else:
            adresse = text(get("adresse"))
            cp, warning = rules.code_postal(get("code_postal"))
            if warning:
                warnings[warning] += 1
            ville = rules.city(text(get("ville")))

        if self.declaration.ignore_siret or not (siret_raw or siren_raw):
            siret = siren = ""
        else:
            siret, siren, warning = rules.siret_siren(siret_raw, siren_raw)
            if warning:
                warnings[warning] += 1
        telephone = email = url = horaires = ""
        if telephone_raw:
            telephone, warning = rules.telephone(telephone_raw, cp)
            if warning:
                warnings[warning] += 1
        if email_raw:
            email, warning = rules.email(email_raw)
            if warning:
                warnings[warning] += 1
        if url_raw:
            url, warning = rules.url(url_raw)
            if warning:
                warnings[warning] += 1
        if horaires_raw:
            horaires_raw = text(horaires_raw)
            if horaires_raw:
                horaires, warning = rules.horaires_osm(horaires_raw)
                if warning:
                    warnings[warning] += 1
        nom_commercial = text(nom_commercial) if nom_commercial else ""
        adresse_complement = text(adresse_complement) if adresse_complement else ""

        if len("".join((nom, nom_commercial, adresse, adresse_complement, ville, telephone))) > 255:
            # rare: cut the varchar(255) columns that overflow (one check first for the usual short values)
            cut = [v[:255] for v in (nom, nom_commercial, adresse, adresse_complement, ville, telephone)]
            warnings["truncated"] += sum(1 for v in (nom, nom_commercial, adresse, adresse_complement, ville,
                                                      telephone) if len(v) > 255)
            nom, nom_commercial, adresse, adresse_complement, ville, telephone = cut
        values = [
            str(row_number), "", identifiant_externe, "", services.acteur_type, nom, nom_commercial, adresse,
            adresse_complement, cp, ville, url, email, telephone, siret, siren,
            text(description) if description else "", horaires,
            text(horaires_description) if horaires_description else "", text(consignes) if consignes else "",
            public.public_accueilli, public.reprise, public.exclusivite, public.rdv, public.lieu_prestation,
            repr(latitude) if latitude is not None else NULL, repr(longitude) if longitude is not None else NULL,
        ]

        written = 0
        seen = self.seen
        for source_code in source_codes:
            identifiant_unique = rules.identifiant_unique(source_code, identifiant_externe)
            if len(identifiant_unique) > _MAX_ID:
                report.reject("identifiant too long", row_number, identifiant_externe, identifiant_unique)
                continue
            digest = hash(identifiant_unique)
            if digest in seen:
                report.duplicates += 1
            else:
                seen.add(digest)
            values[1] = identifiant_unique
            values[3] = source_code
            out.write(values, identifiant_unique, services)
            written += 1
        report.acteurs_written += written
        report.propositions_written += written * len(services.proposition_suffixes)
        report.labels_written += written * len(services.label_suffixes)
        report.acteur_services_written += written * len(services.service_suffixes)
        return written


_CACHE_LIMIT = 100_000
# Raw columns read by row(), grouped for one map(row.get, …) each (order = unpacking order there).
_SERVICE_COLUMNS = (
    "type_de_point_de_collecte", "point_de_reparation", "point_dapport_de_service_reparation",
    "point_dapport_pour_reemploi", "point_de_collecte_ou_de_reprise_des_dechets", "produitsdechets_acceptes",
    "labels_etou_bonus",
)
_PUBLIC_COLUMNS = (
    "public_accueilli", "reprise", "service_a_domicile", "exclusivite_de_reprisereparation", "uniquement_sur_rdv",
)
_ACTEUR_COLUMNS = (
    "nom_de_lorganisme", "id_point_apport_ou_reparation", "latitudewgs84", "longitudewgs84", "adresse_format_ban",
    "siret", "siren", "telephone", "email", "site_web", "horaires_douverture", "enseigne_commerciale",
    "adresse_complement", "description", "horaires_description", "consignes_dacces",
)


def _memo(cache: dict[Any, Any], raw: Any, compute: Any) -> Any:
    """cache[raw], computed on a miss; unhashable raw values (lists, dicts) are not cached."""
    try:
        return cache[raw]
    except KeyError:
        if len(cache) >= _CACHE_LIMIT:  # bounded memory on feeds with endless variety
            cache.clear()
        result = cache[raw] = compute(raw)
        return result
    except TypeError:
        return compute(raw)


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _identifier(row: dict[str, Any]) -> object:
    for key in ("id_point_apport_ou_reparation", "id", "C_SERVICE", "nom_de_lorganisme", "name", "N_SERVICE"):
        value = row.get(key)
        if value not in (None, ""):
            return value
    return ""


class _Writers:
    """The four COPY text files of a run. Lines are gathered in lists and written in batches:
    one write per few thousand lines costs far less than one per line."""

    BATCH = 4096

    def __init__(self, run_dir: Path, report: NormalisationReport) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.report = report
        self.files = [
            open(run_dir / name, "w", encoding="utf-8", newline="", buffering=1 << 20)
            for name in (ACTEURS_FILE, PROPOSITIONS_FILE, LABELS_FILE, ACTEUR_SERVICES_FILE)
        ]
        self.pending: list[list[str]] = [[], [], [], []]
        self.acteurs, self.propositions, self.labels, self.services = (p.append for p in self.pending)

    def write(self, values: list[str], identifiant_unique: str, services: _Services) -> None:
        # Text values hold no control characters (rules.text removes them), so a backslash is
        # the only character COPY needs escaped; NULL markers are added after that check.
        if _PERMUTATION is not None:
            values = [values[i] for i in _PERMUTATION]
        line = "\t".join(values)
        if line.count("\\") != values.count(NULL):
            line = "\t".join(v if v == NULL else escape(v) for v in values)
            identifiant_unique = escape(identifiant_unique)
        self.acteurs(line)
        glue = "\n" + identifiant_unique
        if services.proposition_suffixes:
            self.propositions(identifiant_unique + glue.join(services.proposition_suffixes))
        if services.label_suffixes:
            self.labels(identifiant_unique + glue.join(services.label_suffixes))
        if services.service_suffixes:
            self.services(identifiant_unique + glue.join(services.service_suffixes))
        if len(self.pending[0]) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        for file, lines in zip(self.files, self.pending, strict=True):
            if lines:
                file.write("\n".join(lines))
                file.write("\n")
                lines.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            for f in self.files:
                f.close()


def normalise(declaration: SourceDeclaration, rows: Iterable[Any], reference: ReferenceCodesLike, run_dir: Path,
              context: NormalisationContext | None = None, *, first_row_number: int = 1,
              seen: set[int] | None = None) -> NormalisationReport:
    """Stream `rows` (raw feed dicts) into run_dir/{acteurs,propositions,labels,acteur_services}.tsv.

    Rows are numbered from `first_row_number` (a part of a feed normalised on its own starts
    elsewhere); `seen` collects the hashes of the identifiant_unique written (duplicates are
    counted against it). Raises ConfigurationError (before reading any row) when the
    declaration or its mapping targets codes absent from `reference`, or when a SINOE source
    gets no nomenclature. Never raises because of a row's content.
    """
    started = time.perf_counter()
    context = context or NormalisationContext()
    mapping = load_mapping(declaration.product_mapping)
    check_configuration(declaration, reference, mapping)
    if declaration.format == "sinoe" and not context.nomenclature:
        raise ConfigurationError(f"source {declaration.code}: format sinoe needs context.nomenclature")
    report = NormalisationReport(source=declaration.code)
    normaliser = _Normaliser(declaration, reference, mapping, context, report, set() if seen is None else seen)
    out = _Writers(Path(run_dir), report)
    try:
        row_number = first_row_number - 1
        for row_number, raw in enumerate(rows, start=first_row_number):
            try:
                written = normaliser.row(row_number, raw, out)
            except Exception as exc:  # one bad row must not stop the run; it is counted instead
                report.reject(f"internal error: {type(exc).__name__}", row_number,
                              _identifier(raw) if isinstance(raw, dict) else "", str(exc))
                written = 0
            if written:
                report.rows_written += 1
            else:
                report.rows_rejected += 1
        report.rows_read = row_number - first_row_number + 1
    finally:
        out.close()
    report.seconds = time.perf_counter() - started
    return report
