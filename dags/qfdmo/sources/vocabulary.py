"""The normaliser's vocabulary: the values partners write, their synonyms, and the carte codes they
become (2026 rules of pointsapport-columns.md). Keys are matching keys (`rules.unaccented_key`:
lowercase, no accents, straight quotes, single spaces) unless said otherwise.

The rules that apply them are in `rules` (one field) and `row` (one row); a new synonym is one line
here.
"""

from __future__ import annotations

# Text that means "no value" in any column (lowercase).
NULL_LIKE = frozenset({"null", "none", "nan", "na", "n/a", "non applicable", "aucun", "-"})

TRUE_WORDS = frozenset({"oui", "yes", "true", "1", "vrai"})
FALSE_WORDS = frozenset({"non", "no", "false", "0", "faux"})

# Separator of the list columns (products, labels, eco-organismes).
LIST_SEPARATOR = "|"

# --- acteur types ---------------------------------------------------------------------------------

ACTEUR_TYPES = {
    "solution en ligne (site web, app. mobile)": "acteur_digital",
    "artisan, commerce independant": "artisan",
    "magasin / franchise, enseigne commerciale / distributeur / point de vente": "commerce",
    "magasin / franchise, enseigne commerciale / distributeur / point de vente / franchise,"
    " enseigne commerciale / distributeur / point de vente": "commerce",
    "point d'apport volontaire publique": "pav_public",
    "point d'apport volontaire public": "pav_public",
    "point d'apport volontaire prive": "pav_prive",
    "point d'apport volontaire ephemere / ponctuel": "pav_ponctuel",
    "association, entreprise de l'economie sociale et solidaire (ess)": "ess",
    "etablissement de sante": "ets_sante",
    "decheterie": "decheterie",
    "plateforme inertes": "plateforme_inertes",
}
# Some partners repeat the last part of the commerce label: any label starting so is a commerce.
COMMERCE_PREFIX = "magasin / franchise, enseigne commerciale / distributeur / point de vente"
COMMERCE = "commerce"

ACTEUR_DIGITAL = "acteur_digital"  # no location needed; its identifiant_externe gets DIGITAL_SUFFIX
DIGITAL_SUFFIX = "_d"
ESS = "ess"  # an acteur of type ESS gets the label ESS

# --- public, reprise, lieu de prestation ----------------------------------------------------------

# Keys: lowercase (accents kept first, then unaccented).
PUBLIC_ACCUEILLI = {
    "particuliers": "Particuliers",
    "professionnels": "Professionnels",
    "particuliers et professionnels": "Particuliers et professionnels",
    "aucun": "Aucun",
    # SINOE codes
    "dma": "Particuliers",
    "pro": "Professionnels",
    "dma/pro": "Particuliers et professionnels",
    "np": "",
}
# The carte shows acteurs open to the public: these are rejected.
PUBLICS_OUT_OF_SCOPE = frozenset({"Professionnels", "Aucun"})

REPRISE = {"1 pour 0": "1 pour 0", "1 pour 1": "1 pour 1", "oui": "1 pour 1", "non": "1 pour 0"}

A_DOMICILE = frozenset({"service a domicile uniquement", "oui exclusivement"})
SUR_PLACE_OU_A_DOMICILE = frozenset({"oui", "service a domicile et en boutique"})

# --- labels ---------------------------------------------------------------------------------------

BONUS_REPARATION = "agree bonus reparation"  # becomes the declaration's label_bonus_reparation
LABELS_IGNORED = frozenset({"", "non applicable", "na", "n/a", "null", "aucun", "non", "none", "nan", "-"})

# --- actions and acteur services the flags of a row give ------------------------------------------

REPARER = "reparer"  # point_de_reparation / point_dapport_de_service_reparation
DONNER = "donner"  # point_dapport_pour_reemploi …
RAPPORTER = "rapporter"  # … when the declaration says returnable_objects
TRIER = "trier"  # point_de_collecte_ou_de_reprise_des_dechets
SERVICE_DE_REPARATION = "service_de_reparation"
STRUCTURE_DE_COLLECTE = "structure_de_collecte"
