"""Format of the normalised run files (written by run_files.RunFileWriter, read by stage()).

PostgreSQL COPY text format (see run_files): UTF-8, tab separated, no header, `\\N` = NULL.
The file names and column order below are the contract: both sides import these constants.
"""

from __future__ import annotations

ACTEURS_FILE = "acteurs.tsv"
PROPOSITIONS_FILE = "propositions.tsv"
LABELS_FILE = "labels.tsv"
ACTEUR_SERVICES_FILE = "acteur_services.tsv"

ACTEUR_COLUMNS: tuple[str, ...] = (
    "row_number",
    "identifiant_unique",
    "identifiant_externe",
    "source_code",
    "acteur_type_code",
    "nom",
    "nom_commercial",
    "adresse",
    "adresse_complement",
    "code_postal",
    "ville",
    "url",
    "email",
    "telephone",
    "siret",
    "siren",
    "description",
    "horaires_osm",
    "horaires_description",
    "consignes_dacces",
    "public_accueilli",
    "reprise",
    "exclusivite_de_reprisereparation",
    "uniquement_sur_rdv",
    "lieu_prestation",
    "latitude",
    "longitude",
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
