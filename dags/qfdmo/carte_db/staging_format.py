"""Format of the normalised run files (written by run_files.RunFileWriter, read by stage()).

PostgreSQL COPY text format (see run_files): UTF-8, tab separated, no header, `\\N` = NULL.
The file names and column order below are the contract: both sides import these constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ACTEURS_FILE = "acteurs.tsv"
PROPOSITIONS_FILE = "propositions.tsv"
LABELS_FILE = "labels.tsv"
ACTEUR_SERVICES_FILE = "acteur_services.tsv"


@dataclass(frozen=True)
class ActeurColumn:
    """One column of acteurs.tsv and what the carte does with it.

    kind: "text" and "bool" columns are stored as they are in the qfdmo_acteur column of the same
    name, and compared by the diff (their length limits and choices come from the webapp's
    contract, webapp_schema.yml); "code" columns are resolved to `stored_as` through the `code`
    of `reference`; "coordinate" columns (latitude, longitude) make `location`; "key" is
    identifiant_unique and "order" the feed line number (first line wins on duplicates).
    """

    name: str
    kind: Literal["key", "order", "text", "bool", "code", "coordinate"] = "text"
    stored_as: str | None = None  # qfdmo_acteur column of a code or coordinate
    reference: str | None = None  # reference table of a code
    # '' in the run file is NULL in qfdmo_acteur (the webapp says "not given" with NULL there).
    empty_is_null: bool = False

    @property
    def staging_type(self) -> str:
        """SQL type of the column in the raw staging table."""
        return {"order": "bigint", "bool": "boolean", "coordinate": "double precision"}.get(self.kind, "text")


ACTEUR_FIELDS: tuple[ActeurColumn, ...] = (
    ActeurColumn("row_number", "order"),
    ActeurColumn("identifiant_unique", "key"),
    ActeurColumn("identifiant_externe"),
    ActeurColumn("source_code", "code", stored_as="source_id", reference="qfdmo_source"),
    ActeurColumn("acteur_type_code", "code", stored_as="acteur_type_id", reference="qfdmo_acteurtype"),
    ActeurColumn("nom"),
    ActeurColumn("nom_commercial"),
    ActeurColumn("adresse"),
    ActeurColumn("adresse_complement"),
    ActeurColumn("code_postal"),
    ActeurColumn("ville"),
    ActeurColumn("url"),
    ActeurColumn("email"),
    ActeurColumn("telephone"),
    ActeurColumn("siret"),
    ActeurColumn("siren"),
    ActeurColumn("description"),
    ActeurColumn("horaires_osm"),
    ActeurColumn("horaires_description"),
    ActeurColumn("consignes_dacces"),
    ActeurColumn("public_accueilli"),
    ActeurColumn("reprise"),
    ActeurColumn("exclusivite_de_reprisereparation", "bool"),
    ActeurColumn("uniquement_sur_rdv", "bool"),
    ActeurColumn("lieu_prestation", empty_is_null=True),
    ActeurColumn("latitude", "coordinate", stored_as="location"),
    ActeurColumn("longitude", "coordinate", stored_as="location"),
)
ACTEUR_COLUMNS: tuple[str, ...] = tuple(c.name for c in ACTEUR_FIELDS)
TEXT_COLUMNS: tuple[ActeurColumn, ...] = tuple(c for c in ACTEUR_FIELDS if c.kind == "text")
BOOL_COLUMNS: tuple[ActeurColumn, ...] = tuple(c for c in ACTEUR_FIELDS if c.kind == "bool")
CODE_COLUMNS: tuple[ActeurColumn, ...] = tuple(c for c in ACTEUR_FIELDS if c.kind == "code")
# The qfdmo_acteur columns a run writes and the diff compares (statut and modifie_le are the apply's
# own); every other column (nom_officiel, naf_principal, commentaires, siret_is_closed,
# action_principale_id, cree_le) is left as it is.
MANAGED_COLUMNS: tuple[str, ...] = (
    *(c.name for c in TEXT_COLUMNS),
    *(c.name for c in BOOL_COLUMNS),
    # location once for its two coordinates
    *dict.fromkeys(c.stored_as for c in ACTEUR_FIELDS if c.kind in ("code", "coordinate") and c.stored_as),
)
PROPOSITION_COLUMNS: tuple[str, ...] = (
    "identifiant_unique",
    "action_code",
    "sous_categorie_code",
)
LABEL_COLUMNS: tuple[str, ...] = ("identifiant_unique", "label_code")
ACTEUR_SERVICE_COLUMNS: tuple[str, ...] = ("identifiant_unique", "acteur_service_code")

FILES: dict[str, tuple[str, ...]] = {
    ACTEURS_FILE: ACTEUR_COLUMNS,
    PROPOSITIONS_FILE: PROPOSITION_COLUMNS,
    LABELS_FILE: LABEL_COLUMNS,
    ACTEUR_SERVICES_FILE: ACTEUR_SERVICE_COLUMNS,
}

NULL = "\\N"
