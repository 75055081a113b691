"""One feed row → its acteur lines in the run files, or counted rejections.

The order of the checks is the order of the rejection reasons a row can get: format (adapter),
source, acteur type / products / actions, nom, public, location, identifiant length. Categorical
fields go through `combinations` (cached per distinct combination); fields unique to a row through
the cheap compiled-regex rules of `rules`.
"""

from __future__ import annotations

from collections import Counter
from hashlib import blake2b
from typing import Any

from qfdmo.carte_db.run_files import NULL, RunFileWriter
from qfdmo.carte_db.staging_format import ACTEUR_COLUMNS
from qfdmo.sources import rules
from qfdmo.sources import vocabulary as words
from qfdmo.sources.combinations import Combinations, Public, Services
from qfdmo.sources.configuration import NormalisationContext, ReferenceCodesLike
from qfdmo.sources.declaration import SourceDeclaration
from qfdmo.sources.formats import (
    ADDRESS_FIELDS,
    DETAIL_FIELDS,
    IDENTIFIER_FIELDS,
    IDENTITY_FIELDS,
    PUBLIC_FIELDS,
    SERVICE_FIELDS,
    Rejected,
    feed_format,
)
from qfdmo.sources.mapping import ProductMapping
from qfdmo.sources.report import NormalisationReport

# varchar(255) of the carte columns: identifiers that long are rejected (cutting them could merge
# two acteurs); nom, nom_commercial, adresse, adresse_complement, ville and telephone are cut.
MAX_ID = 255
MAX_TEXT = 255

# The order in which row() builds an acteur's values; staging_format.ACTEUR_COLUMNS may order them
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
_LOCATION = slice(_BUILD_ORDER.index("latitude"), _BUILD_ORDER.index("longitude") + 1)
_PERMUTATION = None if tuple(ACTEUR_COLUMNS) == _BUILD_ORDER else [_BUILD_ORDER.index(c) for c in ACTEUR_COLUMNS]


def _identifier(row: dict[str, Any]) -> object:
    for key in IDENTIFIER_FIELDS:
        value = row.get(key)
        if value not in (None, ""):
            return value
    return ""


class RowNormaliser:
    """Normalises the rows of one run into `out`, counting in `report`; `seen` holds the digests of
    the identifiant_unique written (shared across the parts of a feed to count duplicates)."""

    def __init__(self, declaration: SourceDeclaration, reference: ReferenceCodesLike, mapping: ProductMapping,
                 context: NormalisationContext, report: NormalisationReport, seen: set[bytes],
                 out: RunFileWriter) -> None:
        feed = feed_format(declaration.format)
        self.declaration = declaration
        self.report = report
        self.seen = seen
        self.out = out
        self.combinations = Combinations(declaration, reference, mapping)
        self.services_cache = self.combinations.services_cache
        self.public_cache = self.combinations.public_cache
        self.adapt = feed.adapter(context, report) if feed.adapter is not None else None
        self.raw_identifier = feed.identifier
        self.ban_address = feed.ban_address
        self.fixed_source_codes = (declaration.source_code,) if declaration.source_code is not None else None
        self.source_code_column = declaration.source_code_column or ""

    def row(self, row_number: int, raw: Any) -> int:
        """Normalise one feed row; returns the number of acteurs written."""
        report = self.report
        if not isinstance(raw, dict):
            report.reject("invalid row: not an object", row_number, "", type(raw).__name__)
            return 0
        row = raw
        if self.adapt is not None:
            try:
                row = self.adapt(raw)
            except Rejected as rejected:
                report.reject(rejected.reason, row_number, self.raw_identifier(raw), rejected.value)
                return 0
        source_codes = self.fixed_source_codes or self._row_source_codes(raw, row, row_number)
        if not source_codes:
            return 0
        get = row.get
        # One C-level pass over the row per group of fields (much cheaper than one .get each).
        services = self._services(tuple(map(get, SERVICE_FIELDS)))
        warnings = report.warnings
        nom_raw, externe_raw, lat_raw, lon_raw = map(get, IDENTITY_FIELDS)
        nom = rules.text(nom_raw) if nom_raw else ""
        identifiant_externe = rules.text(externe_raw) if externe_raw else ""
        if not identifiant_externe:
            identifiant_externe = rules.identifiant_externe_from_nom(nom)
        identifier = identifiant_externe or nom
        rejection: tuple[str, object] | None = ("missing nom", "") if not nom else services.rejection
        public: Public | None = None
        if rejection is None:
            public = self._public(tuple(map(get, PUBLIC_FIELDS)))
            rejection = public.rejection
        if rejection is not None:
            return self._reject(source_codes, rejection, row_number, identifier)
        assert public is not None
        for warning in public.warnings:
            warnings[warning] += 1
        latitude: float | None
        longitude: float | None
        if type(lat_raw) is float and type(lon_raw) is float and lat_raw and lon_raw \
                and -90.0 <= lat_raw <= 90.0 and -180.0 <= lon_raw <= 180.0:
            latitude, longitude = lat_raw, lon_raw  # the common case: JSON numbers
        else:
            latitude, longitude = _location(lat_raw, lon_raw, warnings)
        if latitude is None and not services.digital:
            return self._reject(source_codes, ("missing location", f"{lat_raw!r}, {lon_raw!r}"), row_number,
                                identifier)
        if services.digital:
            identifiant_externe += words.DIGITAL_SUFFIX
        if len(identifiant_externe) > MAX_ID:
            return self._reject(source_codes, ("identifiant too long", identifiant_externe), row_number, identifier)
        values = self._values(get, row_number, identifiant_externe, nom, services, public, warnings)
        if latitude is not None:
            values[_LOCATION] = repr(latitude), repr(longitude)
        return self._write(values, source_codes, services, row_number, identifiant_externe)

    def _row_source_codes(self, raw: dict[str, Any], row: dict[str, Any], row_number: int) -> tuple[str, ...]:
        """Source codes named by the row's source column; unknown names are counted and rejected."""
        report = self.report
        source_codes, unknown_sources = self.combinations.source_codes(raw.get(self.source_code_column))
        for name in unknown_sources:
            report.unknown("source", name)
            report.reject("unknown source", row_number, _identifier(row), name)
        if not unknown_sources and not source_codes:
            report.reject("unknown source", row_number, _identifier(row), "")
        return source_codes

    def _services(self, key: tuple[Any, ...]) -> Services:
        try:
            services = self.services_cache.get(key) or self.combinations.services(key)
        except TypeError:  # an unhashable raw value (list, dict): resolved without the cache
            services = self.combinations.services(key)
        report = self.report
        for kind, value in services.unknown:
            report.unknown(kind, value)
        warnings = report.warnings
        for warning in services.warnings:
            warnings[warning] += 1
        return services

    def _public(self, key: tuple[Any, ...]) -> Public:
        try:
            return self.public_cache.get(key) or self.combinations.public(key)
        except TypeError:
            return self.combinations.public(key)

    def _values(self, get: Any, row_number: int, identifiant_externe: str, nom: str, services: Services, public: Public,
                warnings: Counter[str]) -> list[str]:
        """The acteur's values in build order; identifiant_unique and source_code blank, location NULL."""
        (ban, siret_raw, siren_raw, telephone_raw, email_raw, url_raw, horaires_raw, nom_commercial,
         adresse_complement, description, horaires_description, consignes) = map(get, DETAIL_FIELDS)
        text = rules.text
        warning: str | None
        if self.ban_address:
            adresse, cp, ville, warning = rules.address(ban)
            if warning:
                warnings[warning] += 1
        else:
            adresse, cp, ville = _address_fields(get, warnings)
        if self.declaration.ignore_siret or not (siret_raw or siren_raw):
            siret = siren = ""
        else:
            siret, siren, warning = rules.siret_siren(siret_raw, siren_raw)
            if warning:
                warnings[warning] += 1
        # Contacts: each '' when absent or invalid (then a warning).
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
            horaires_text = text(horaires_raw)
            if horaires_text:
                horaires, warning = rules.horaires_osm(horaires_text)
                if warning:
                    warnings[warning] += 1
        nom_commercial = text(nom_commercial) if nom_commercial else ""
        adresse_complement = text(adresse_complement) if adresse_complement else ""
        cut = (nom, nom_commercial, adresse, adresse_complement, ville, telephone)
        if len("".join(cut)) > MAX_TEXT:  # one check first: values are usually short
            warnings["truncated"] += sum(1 for v in cut if len(v) > MAX_TEXT)
            nom, nom_commercial, adresse, adresse_complement, ville, telephone = (v[:MAX_TEXT] for v in cut)
        return [
            str(row_number), "", identifiant_externe, "", services.acteur_type, nom, nom_commercial, adresse,
            adresse_complement, cp, ville, url, email, telephone, siret, siren,
            text(description) if description else "", horaires,
            text(horaires_description) if horaires_description else "", text(consignes) if consignes else "",
            public.public_accueilli, public.reprise, public.exclusivite, public.rdv, public.lieu_prestation,
            NULL, NULL,
        ]

    def _write(self, values: list[str], source_codes: tuple[str, ...], services: Services, row_number: int,
               identifiant_externe: str) -> int:
        """One acteur line per source code (its identifiant_unique depends on it)."""
        written = 0
        seen = self.seen
        report = self.report
        for source_code in source_codes:
            identifiant_unique = rules.identifiant_unique(source_code, identifiant_externe)
            if len(identifiant_unique) > MAX_ID:
                report.reject("identifiant too long", row_number, identifiant_externe, identifiant_unique)
                continue
            # A stable digest, not hash(): the parts of a feed are normalised by separate
            # interpreters whose string hashes differ.
            digest = blake2b(identifiant_unique.encode(), digest_size=8).digest()
            if digest in seen:
                report.duplicates += 1
            else:
                seen.add(digest)
            values[1] = identifiant_unique
            values[3] = source_code
            self.out.write(values if _PERMUTATION is None else [values[i] for i in _PERMUTATION], services.links)
            written += 1
        return written

    def _reject(self, source_codes: tuple[str, ...], rejection: tuple[str, object], row_number: int,
                identifier: object) -> int:
        reason, value = rejection
        for _ in source_codes:  # one rejection per acteur the row would have given
            self.report.reject(reason, row_number, identifier, value)
        return 0


def _location(lat_raw: object, lon_raw: object, warnings: Counter[str]) -> tuple[float | None, float | None]:
    """(latitude, longitude) from text or numbers, both None unless both are valid."""
    latitude, warning = rules.coordinate(lat_raw, 90.0)
    if warning:
        warnings[warning] += 1
    longitude, warning = rules.coordinate(lon_raw, 180.0)
    if warning:
        warnings[warning] += 1
    if latitude is None or longitude is None:
        return None, None
    return latitude, longitude


def _address_fields(get: Any, warnings: Counter[str]) -> tuple[str, str, str]:
    """ADDRESS_FIELDS → (adresse, code_postal, ville)."""
    adresse_raw, cp_raw, ville_raw = map(get, ADDRESS_FIELDS)
    cp, warning = rules.code_postal(cp_raw)
    if warning:
        warnings[warning] += 1
    return rules.text(adresse_raw), cp, rules.city(rules.text(ville_raw))

