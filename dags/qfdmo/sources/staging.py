"""Names and column order of the normalised run files, from their single source of truth.

qfdmo.carte_db.staging_format (CARTE-DB) owns the contract; normalise imports it from here so
that the dependency is in one place.
"""

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

__all__ = [
    "ACTEUR_COLUMNS",
    "ACTEUR_SERVICE_COLUMNS",
    "ACTEUR_SERVICES_FILE",
    "ACTEURS_FILE",
    "LABEL_COLUMNS",
    "LABELS_FILE",
    "NULL",
    "PROPOSITION_COLUMNS",
    "PROPOSITIONS_FILE",
    "escape",
]
