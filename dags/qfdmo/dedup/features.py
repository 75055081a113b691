"""The compared fields, normalised in DuckDB SQL: from table `raw` (one row per orphan or parent, as
read from the exhaustive view) to table `acteurs`, which blocking and matching read.

Normalisation (as upstream, plus what its doc says it lacks): lower case, accents stripped, anything
but [a-z0-9] is a space; common abbreviations expanded (bd -> boulevard, st -> saint, ...); legal
forms (sarl, sas, ...) and short stop words dropped from nom; address complements (bat, etage, ...)
dropped from adresse; words sorted so that word order does not matter. Phones keep their last 9
digits (0 1 23 45 67 89 and +33 1 23 45 67 89 compare equal), URLs their domain without `www.`.
"""

from __future__ import annotations

ABBREVIATIONS = {
    "bd": "boulevard", "bld": "boulevard", "blvd": "boulevard", "av": "avenue", "ave": "avenue",
    "st": "saint", "ste": "sainte", "pl": "place", "rte": "route", "ch": "chemin", "imp": "impasse",
    "fg": "faubourg", "fbg": "faubourg", "all": "allee", "sq": "square", "qu": "quai", "r": "rue",
    "ets": "etablissements", "etbs": "etablissements", "cie": "compagnie", "dr": "docteur",
    "gal": "general", "mal": "marechal", "zi": "zone industrielle", "za": "zone artisanale",
}
LEGAL_FORMS = ("sarl", "sas", "sasu", "eurl", "sa", "sci", "scop", "scic", "eirl", "ei", "snc", "selarl")
STOP_WORDS = ("de", "du", "des", "la", "le", "les", "l", "d", "et", "a", "au", "aux", "en", "sur")
ADDRESS_COMPLEMENTS = ("bat", "batiment", "etage", "porte", "escalier", "esc", "appt", "appartement",
                       "residence", "res", "lot", "local", "cedex", "bp", "cs")
# Grid cells of about 220 m (north-south) for spatial blocking; a second grid shifted by half a
# cell catches the pairs that a cell border separates.
CELL_DEGREES = 0.002


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _abbreviation_map() -> str:
    keys = ", ".join(f"'{k}'" for k in ABBREVIATIONS)
    values = ", ".join(f"'{v}'" for v in ABBREVIATIONS.values())
    return f"MAP([{keys}], [{values}])"


def _words(column: str) -> str:
    """The column's words, lower case, without accents, abbreviations expanded."""
    cleaned = f"trim(regexp_replace(lower(strip_accents(coalesce({column}, ''))), '[^a-z0-9]+', ' ', 'g'))"
    expanded = (
        f"list_transform(string_split({cleaned}, ' '), "
        f"lambda w: coalesce({_abbreviation_map()}[w], w))"
    )
    # An expansion may hold two words (zi -> zone industrielle).
    return f"string_split(array_to_string({expanded}, ' '), ' ')"


def normalise_sql(source_table: str = "raw", target_table: str = "acteurs") -> str:
    """CREATE TABLE target AS the normalised, blockable form of source."""
    nom_drop = _sql_list(LEGAL_FORMS + STOP_WORDS)
    adresse_drop = _sql_list(ADDRESS_COMPLEMENTS + STOP_WORDS)
    return f"""
CREATE OR REPLACE TABLE {target_table} AS
WITH words AS (
    SELECT *,
        list_filter({_words("nom")}, lambda w: length(w) > 1 AND NOT list_contains({nom_drop}, w)) AS nom_words,
        list_filter({_words("adresse")}, lambda w: (length(w) > 1 OR regexp_matches(w, '^[0-9]$'))
            AND NOT list_contains({adresse_drop}, w)) AS adresse_words,
        regexp_replace(coalesce(telephone, ''), '[^0-9]', '', 'g') AS phone_digits,
        lower(regexp_replace(regexp_replace(coalesce(url, ''), '^[a-zA-Z]+://', ''), '^www\\.', '')) AS url_rest
    FROM {source_table}
)
SELECT
    identifiant_unique,
    est_parent,
    sources,
    acteur_type_id,
    nullif(array_to_string(list_sort(list_distinct(nom_words)), ' '), '') AS nom_norm,
    nullif(list_sort(list_distinct(nom_words)), []) AS nom_tokens,
    nullif(array_to_string(list_sort(list_distinct(adresse_words)), ' '), '') AS adresse_norm,
    nullif(adresse_words, []) AS adresse_tokens,
    list_filter(adresse_words, lambda w: regexp_matches(w, '^[0-9]+$'))[1] AS adresse_numero,
    nullif(regexp_replace(coalesce(code_postal, ''), '[^0-9AB]', '', 'g'), '') AS code_postal,
    nullif(array_to_string({_words("ville")}, ' '), '') AS ville_norm,
    CASE WHEN length(phone_digits) >= 9 THEN right(phone_digits, 9) END AS telephone_norm,
    nullif(split_part(split_part(url_rest, '/', 1), '?', 1), '') AS url_domain,
    nullif(lower(trim(coalesce(email, ''))), '') AS email_norm,
    CASE WHEN length(siret) = 14 THEN siret END AS siret,
    coalesce(CASE WHEN length(siren) = 9 THEN siren END, CASE WHEN length(siret) = 14 THEN left(siret, 9) END)
        AS siren,
    CASE WHEN latitude IS NOT NULL AND longitude IS NOT NULL AND NOT (latitude = 0 AND longitude = 0)
         THEN latitude END AS latitude,
    CASE WHEN latitude IS NOT NULL AND longitude IS NOT NULL AND NOT (latitude = 0 AND longitude = 0)
         THEN longitude END AS longitude,
    cos(radians(latitude)) AS cos_latitude
FROM words
"""


def rare_words_sql(table: str = "acteurs") -> str:
    """Adds nom_rare_1, nom_rare_2 to `table`: its two least frequent nom words in its code postal
    (the town's name is in many noms of that town, rare elsewhere)."""
    return f"""
CREATE OR REPLACE TEMP TABLE nom_words AS
    SELECT identifiant_unique, coalesce(code_postal, '') AS cp, unnest(list_distinct(nom_tokens)) AS w FROM {table};
CREATE OR REPLACE TEMP TABLE nom_word_frequency AS SELECT cp, w, count(*) AS n FROM nom_words GROUP BY cp, w;
CREATE OR REPLACE TEMP TABLE nom_rare AS
    SELECT identifiant_unique, list(w ORDER BY n, w)[1] AS nom_rare_1, list(w ORDER BY n, w)[2] AS nom_rare_2
    FROM nom_words JOIN nom_word_frequency USING (cp, w)
    GROUP BY identifiant_unique;
DROP TABLE nom_words;
CREATE OR REPLACE TABLE {table} AS SELECT t.*, r.nom_rare_1, r.nom_rare_2 FROM {table} t LEFT JOIN nom_rare r
    USING (identifiant_unique);
DROP TABLE nom_rare; DROP TABLE nom_word_frequency;
"""


def blocking_keys_sql(table: str = "acteurs") -> dict[str, str]:
    """Blocking key name -> SQL expression over `table`'s columns (NULL: not blocked on this key)."""
    cell = CELL_DEGREES
    return {
        "siret": "siret",
        "telephone": "telephone_norm",
        "email": "email_norm",
        "cell": f"CASE WHEN latitude IS NOT NULL THEN floor(latitude / {cell})::BIGINT::VARCHAR || ':' "
                f"|| floor(longitude / {cell})::BIGINT::VARCHAR END",
        "cell_shifted": f"CASE WHEN latitude IS NOT NULL THEN floor(latitude / {cell} + 0.5)::BIGINT::VARCHAR"
                        f" || ':' || floor(longitude / {cell} + 0.5)::BIGINT::VARCHAR END",
        # The rarest words of nom in its code postal: generic words (atelier, boutique) would make
        # blocks of every shop of a town.
        "cp_nom": "CASE WHEN code_postal IS NOT NULL AND nom_rare_1 IS NOT NULL "
                  "THEN code_postal || ':' || nom_rare_1 END",
        # Located acteurs are also blocked by place; the others get a second chance.
        "cp_nom_2": "CASE WHEN code_postal IS NOT NULL AND nom_rare_2 IS NOT NULL AND latitude IS NULL "
                    "THEN code_postal || ':' || nom_rare_2 END",
        "cp_adresse": "CASE WHEN code_postal IS NOT NULL AND adresse_numero IS NOT NULL "
                      "THEN code_postal || ':' || adresse_numero || ':' || "
                      "coalesce(list_filter(adresse_tokens, lambda w: NOT regexp_matches(w, '^[0-9]+$'))"
                      "[-1], '') END",
        "cp_url": "CASE WHEN code_postal IS NOT NULL AND url_domain IS NOT NULL "
                  "THEN code_postal || ':' || url_domain END",
    }
