"""SINOE (ADEME's directory of déchèteries, a data-fair dataset): waste types as codes of a separate
nomenclature dataset, the location as one "lat,lon" field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qfdmo.sources.formats import Adapter, FeedFormat, Record

if TYPE_CHECKING:
    from qfdmo.feeds.http import HttpClient
    from qfdmo.feeds.readers import FeedPages
    from qfdmo.sources.configuration import NormalisationContext
    from qfdmo.sources.report import NormalisationReport

NOT_APPLICABLE = "NP"


def read(client: HttpClient, url: str) -> FeedPages:
    from qfdmo.feeds.readers import read_datafair

    return read_datafair(client, url)


def adapter(context: NormalisationContext, report: NormalisationReport) -> Adapter:
    from qfdmo.sources.rules import text

    nomenclature = context.nomenclature

    def adapt(row: Record) -> Record:
        labels = []
        for code in text(row.get("LST_TYPE_DECHET")).split("|"):
            code = code.strip()
            if not code or code.upper() == NOT_APPLICABLE:
                continue
            label = nomenclature.get(code)
            if label is None:
                report.unknown("waste_code", code)
            else:
                labels.append(label)
        lat = lon = None
        geopoint = text(row.get("_geopoint"))
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

    return adapt


FORMAT = FeedFormat(
    name="sinoe", read=read, identifier_fields=("C_SERVICE", "N_SERVICE"), adapter=adapter, needs_nomenclature=True
)
