"""Artisanat (the CMA's "Réparacteurs" directory, an explore v2.1 API): one record per artisan,
up to three product categories, a flag for disabled entries."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfdmo.sources.formats import Adapter, FeedFormat, Record, Rejected

if TYPE_CHECKING:
    from qfdmo.feeds.http import HttpClient
    from qfdmo.feeds.readers import FeedPages
    from qfdmo.sources.configuration import NormalisationContext
    from qfdmo.sources.report import NormalisationReport

CATEGORY_FIELDS = ("categorie", "categorie2", "categorie3")


def read(client: HttpClient, url: str) -> FeedPages:
    from qfdmo.feeds.readers import read_artisanat

    return read_artisanat(client, url)


def adapter(context: NormalisationContext, report: NormalisationReport) -> Adapter:
    from qfdmo.sources.rules import boolean, text

    def adapt(row: Record) -> Record:
        identifier = row.get("id")
        if text(identifier) == "":
            raise Rejected("missing identifiant", identifier)
        enabled, _ = boolean(row.get("is_enabled"))
        if enabled is False:
            raise Rejected("disabled", row.get("is_enabled"))
        products = [row.get(c) for c in CATEGORY_FIELDS]
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
            "produitsdechets_acceptes": tuple(p for p in products if text(p)),
        }

    return adapt


FORMAT = FeedFormat(name="artisanat", read=read, identifier_fields=("id", "name"), adapter=adapter)
