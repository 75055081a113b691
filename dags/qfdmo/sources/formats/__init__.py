"""Feed formats: how a partner API is read, and how its records become the common fields.

A format is one module of this package, named as the declarations' `format:` name it, that holds
`FORMAT = FeedFormat(...)`. The declaration validation, the normaliser and the download step find
formats here (`feed_format(name)`, `format_names()`); no other code names one.

The common fields are the points d'apport columns (pointsapport-columns.md): records of that
format are used as they come; an adapter turns a record of another format into a dict of them
(the field groups below), or raises `Rejected`. Adding a format: see the README, "Ajouter un
format".

Importing this package and its formats is cheap (DAG files validate declarations at parse time):
a format imports its reader and the normalisation rules inside its functions.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qfdmo.feeds.http import HttpClient
    from qfdmo.feeds.readers import FeedPages
    from qfdmo.sources.configuration import NormalisationContext
    from qfdmo.sources.report import NormalisationReport

Record = dict[str, Any]
Adapter = Callable[[Record], Record]
Reader = Callable[["HttpClient", str], "FeedPages"]

# The common fields the normaliser reads, by group (read together, in this order).
SERVICE_FIELDS = (
    "type_de_point_de_collecte", "point_de_reparation", "point_dapport_de_service_reparation",
    "point_dapport_pour_reemploi", "point_de_collecte_ou_de_reprise_des_dechets", "produitsdechets_acceptes",
    "labels_etou_bonus",
)
PUBLIC_FIELDS = (
    "public_accueilli", "reprise", "service_a_domicile", "exclusivite_de_reprisereparation", "uniquement_sur_rdv",
)
IDENTITY_FIELDS = ("nom_de_lorganisme", "id_point_apport_ou_reparation", "latitudewgs84", "longitudewgs84")
DETAIL_FIELDS = (
    "adresse_format_ban", "siret", "siren", "telephone", "email", "site_web", "horaires_douverture",
    "enseigne_commerciale", "adresse_complement", "description", "horaires_description", "consignes_dacces",
)
# The address of a format without `ban_address`, in three fields instead of adresse_format_ban.
ADDRESS_FIELDS = ("adresse", "code_postal", "ville")
# What names a record (adapted or not) in the report's examples: the first field not empty.
IDENTIFIER_FIELDS = ("id_point_apport_ou_reparation", "nom_de_lorganisme")


class Rejected(Exception):
    """Raised by an adapter: the record cannot give an acteur (`reason`, counted; `value`, shown)."""

    def __init__(self, reason: str, value: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.value = value


class UnknownFormatError(ValueError):
    """No module of qfdmo.sources.formats has that name."""


@dataclass(frozen=True)
class FeedFormat:
    """One feed format.

    read: the pages of a feed URL (a reader of qfdmo.feeds.readers).
    adapter: (context, report) -> function of one raw record; None when records are already in
        the common fields. Called once per run; the function it returns, once per record.
    identifier_fields: raw fields that name a record before it is adapted (first not empty).
    ban_address: the address is one BAN line (adresse_format_ban), not ADDRESS_FIELDS.
    needs_nomenclature: the run needs the waste-code nomenclature (downloaded beside the feed
        from the declaration's nomenclature_url, passed as NormalisationContext.nomenclature).
    """

    name: str
    read: Reader
    identifier_fields: tuple[str, ...]
    adapter: Callable[[NormalisationContext, NormalisationReport], Adapter] | None = None
    ban_address: bool = False
    needs_nomenclature: bool = False

    def identifier(self, record: Record) -> object:
        """What names `record` in the report: its first identifier field not empty, else ''."""
        for key in self.identifier_fields:
            value = record.get(key)
            if value not in (None, ""):
                return value
        return ""


@functools.cache
def _formats() -> dict[str, FeedFormat]:
    found: dict[str, FeedFormat] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        feed = getattr(importlib.import_module(f"{__name__}.{module.name}"), "FORMAT", None)
        if not isinstance(feed, FeedFormat) or feed.name != module.name:
            raise ImportError(f"{__name__}.{module.name} must define FORMAT = FeedFormat(name={module.name!r}, …)")
        found[feed.name] = feed
    return found


def format_names() -> tuple[str, ...]:
    return tuple(sorted(_formats()))


def feed_format(name: str) -> FeedFormat:
    try:
        return _formats()[name]
    except KeyError:
        raise UnknownFormatError(f"unknown format {name!r} (known: {', '.join(format_names())})") from None
