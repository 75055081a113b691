"""Blocking and probabilistic matching (Fellegi-Sunter, with splink on DuckDB).

Blocking: a pair is compared when it shares one key (same SIRET, phone, e-mail; same ~220 m grid
cell, on two shifted grids; same code postal and rarest word of nom there, or house number and
street word, or URL domain). A key value held by more than `max_block_size` acteurs (a chain's hundreds of
shops in one town, a shared switchboard number) is not used, and reported: no quadratic blow-up,
and those acteurs are still compared through their other keys.

Model: per compared field, a few agreement levels, each with m (how often true duplicates agree at
that level) and u (how often two different acteurs of one block do). The parameters are fixed in
this module rather than re-learnt by EM at each run: training is where splink's time goes at
500,000 acteurs (77 s measured), and the values below were set from the labelled evaluation set
(bench/dedup.py) and kept deliberately conservative. The match weight of a pair is the sum of
log2(m/u) over the fields plus the prior; its match probability is what the threshold applies to.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import duckdb

from qfdmo.dedup.features import blocking_keys_sql, rare_words_sql
from qfdmo.dedup.params import ClusteringParams

# Prior: probability that two acteurs sharing a blocking key are the same place.
PRIOR_MATCH_PROBABILITY = 0.002


@dataclass(frozen=True)
class Level:
    label: str
    sql: str
    m: float
    u: float


# field -> agreement levels, most specific first; a field whose values are missing on either side
# is "null" (weight 0). SQL refers to <column>_l / <column>_r.
def _levels() -> dict[str, tuple[str, list[Level]]]:
    jaccard_nom = ("len(list_intersect(nom_tokens_l, nom_tokens_r))::DOUBLE"
                   " / len(list_distinct(list_concat(nom_tokens_l, nom_tokens_r)))")
    jaccard_adresse = ("len(list_intersect(list_distinct(adresse_tokens_l), list_distinct(adresse_tokens_r)))::DOUBLE"
                       " / len(list_distinct(list_concat(adresse_tokens_l, adresse_tokens_r)))")
    distance_km = "great_circle_km"
    return {
        "nom": ("nom_norm_l IS NULL OR nom_norm_r IS NULL", [
            Level("exact", "nom_norm_l = nom_norm_r", 0.55, 0.004),
            Level("jaro_winkler >= 0.93", "jaro_winkler_similarity(nom_norm_l, nom_norm_r) >= 0.93", 0.22, 0.01),
            Level("mots communs >= 60 %", f"{jaccard_nom} >= 0.6", 0.13, 0.03),
            Level("jaro_winkler >= 0.8", "jaro_winkler_similarity(nom_norm_l, nom_norm_r) >= 0.8", 0.06, 0.12),
            Level("different", "ELSE", 0.04, 0.836),
        ]),
        "adresse": ("adresse_norm_l IS NULL OR adresse_norm_r IS NULL", [
            Level("exact", "adresse_norm_l = adresse_norm_r", 0.6, 0.02),
            Level("meme numero, mots communs >= 50 %",
                  f"adresse_numero_l = adresse_numero_r AND {jaccard_adresse} >= 0.5", 0.25, 0.02),
            Level("jaro_winkler >= 0.9", "jaro_winkler_similarity(adresse_norm_l, adresse_norm_r) >= 0.9", 0.08, 0.05),
            Level("different", "ELSE", 0.07, 0.91),
        ]),
        "code_postal": ("code_postal_l IS NULL OR code_postal_r IS NULL", [
            Level("exact", "code_postal_l = code_postal_r", 0.97, 0.6),
            Level("different", "ELSE", 0.03, 0.4),
        ]),
        "ville": ("ville_norm_l IS NULL OR ville_norm_r IS NULL", [
            Level("exact", "ville_norm_l = ville_norm_r", 0.95, 0.6),
            Level("different", "ELSE", 0.05, 0.4),
        ]),
        "distance": ("latitude_l IS NULL OR latitude_r IS NULL", [
            Level("<= 30 m", f"{distance_km} <= 0.03", 0.55, 0.02),
            Level("<= 100 m", f"{distance_km} <= 0.1", 0.4, 0.1),
            Level("<= 500 m", f"{distance_km} <= 0.5", 0.04, 0.4),
            Level("> 500 m", "ELSE", 0.01, 0.48),
        ]),
        "siret": ("siren_l IS NULL OR siren_r IS NULL", [
            Level("meme SIRET", "siret_l = siret_r", 0.9, 0.0005),
            Level("autre etablissement du SIREN", "siret_l IS NOT NULL AND siret_r IS NOT NULL AND siren_l = siren_r",
                  0.01, 0.05),
            Level("meme SIREN", "siren_l = siren_r", 0.07, 0.01),
            Level("different", "ELSE", 0.02, 0.9395),
        ]),
        "telephone": ("telephone_norm_l IS NULL OR telephone_norm_r IS NULL", [
            Level("exact", "telephone_norm_l = telephone_norm_r", 0.8, 0.005),
            Level("different", "ELSE", 0.2, 0.995),
        ]),
        "url": ("url_domain_l IS NULL OR url_domain_r IS NULL", [
            Level("meme domaine", "url_domain_l = url_domain_r", 0.8, 0.02),
            Level("different", "ELSE", 0.2, 0.98),
        ]),
        "email": ("email_norm_l IS NULL OR email_norm_r IS NULL", [
            Level("exact", "email_norm_l = email_norm_r", 0.8, 0.003),
            Level("different", "ELSE", 0.2, 0.997),
        ]),
        "acteur_type": ("acteur_type_id_l IS NULL OR acteur_type_id_r IS NULL", [
            Level("exact", "acteur_type_id_l = acteur_type_id_r", 0.9, 0.4),
            Level("different", "ELSE", 0.1, 0.6),
        ]),
    }


LEVELS = _levels()
# Equirectangular distance (cos(latitude) precomputed per acteur): within 0.1 % of the great circle
# at the few hundred metres that matter here, and several times cheaper per pair.
_GREAT_CIRCLE_KM = (
    "(111.195 * sqrt(pow(latitude_r - latitude_l, 2) + pow((longitude_r - longitude_l) * cos_latitude_l, 2)))"
)


def splink_settings(params: ClusteringParams) -> dict[str, Any]:
    comparisons = []
    for name in params.compared_fields:
        null_sql, levels = LEVELS[name]
        comparison_levels: list[dict[str, Any]] = [
            {"sql_condition": null_sql, "label_for_charts": "absent", "is_null_level": True}
        ]
        for level in levels:
            comparison_levels.append({
                "sql_condition": level.sql.replace("great_circle_km", _GREAT_CIRCLE_KM),
                "label_for_charts": level.label,
                "m_probability": level.m,
                "u_probability": level.u,
            })
        comparisons.append({"output_column_name": name, "comparison_levels": comparison_levels})
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "identifiant_unique",
        "probability_two_random_records_match": PRIOR_MATCH_PROBABILITY,
        "comparisons": comparisons,
        "retain_matching_columns": True,
        "retain_intermediate_calculation_columns": True,
        "additional_columns_to_retain": ["sources", "latitude", "longitude", "cos_latitude"],
    }


@dataclass
class MatchResult:
    """The pairs at or above the threshold, with their evidence, and what blocking did."""

    pairs: list[dict[str, Any]]
    compared_pairs: int
    large_blocks: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    large_block_count: dict[str, int] = field(default_factory=dict)
    too_far: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def add_blocking_keys(con: duckdb.DuckDBPyConnection, max_block_size: int) -> tuple[dict, dict]:
    """Adds k_<key> columns to `acteurs`; a key value shared by more than max_block_size rows is set
    NULL. Returns (key -> the 5 largest skipped values with sizes, key -> number of skipped values)."""
    con.execute(rare_words_sql())
    keys = blocking_keys_sql()
    selects = ", ".join(f"{expr} AS k_{name}" for name, expr in keys.items())
    con.execute(f"CREATE OR REPLACE TEMP TABLE keyed AS SELECT identifiant_unique, {selects} FROM acteurs")
    examples: dict[str, list[tuple[str, int]]] = {}
    counts: dict[str, int] = {}
    for name in keys:
        column = f"k_{name}"
        large = con.execute(
            f"SELECT {column}, count(*) AS n FROM keyed WHERE {column} IS NOT NULL GROUP BY 1"
            f" HAVING count(*) > ? ORDER BY n DESC", [max_block_size]
        ).fetchall()
        if large:
            examples[name] = [(str(v), int(n)) for v, n in large[:5]]
            counts[name] = len(large)
    # One pass: a key value held by too many acteurs is dropped (NULL joins nothing).
    kept = ", ".join(
        f"CASE WHEN count(k_{name}) OVER (PARTITION BY k_{name}) > {int(max_block_size)} THEN NULL"
        f" ELSE k_{name} END AS k_{name}" if name in counts else f"k_{name}"
        for name in keys
    )
    con.execute(f"CREATE OR REPLACE TABLE acteurs AS SELECT a.*, {kept} FROM acteurs a JOIN keyed USING"
                " (identifiant_unique)")
    con.execute("DROP TABLE keyed")
    return examples, counts


def match(con: duckdb.DuckDBPyConnection, params: ClusteringParams) -> MatchResult:
    """Scores the pairs of table `acteurs` (features.normalise_sql) that blocking generates."""
    from splink import Linker
    from splink.internals.duckdb.database_api import DuckDBAPI

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    large_blocks, large_count = add_blocking_keys(con, params.max_block_size)
    seconds["blocking_keys"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    compared = block(con, params)
    seconds["block"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    db_api = DuckDBAPI(connection=con)
    linker = Linker(db_api.register("acteurs"), splink_settings(params))
    linker.table_management.register_blocked_pairs_for_predict(db_api.register("blocked_pairs"))
    predictions = linker.inference.predict(
        threshold_match_probability=params.match_threshold, warning_mode="never"
    )
    seconds["predict"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    names = list(params.compared_fields)
    gamma = ", ".join(f"gamma_{n}, mw_{n}" for n in names)
    distance = _GREAT_CIRCLE_KM
    too_far_sql = f"(latitude_l IS NOT NULL AND latitude_r IS NOT NULL AND {distance} * 1000 > ?)"
    table = predictions.physical_name
    too_far = con.execute(f"SELECT count(*) FROM {table} WHERE {too_far_sql}",
                          [params.max_distance_m]).fetchall()[0]
    rows = con.execute(
        f"SELECT identifiant_unique_l, identifiant_unique_r, match_probability, match_weight, {gamma}"
        f" FROM {table} WHERE NOT {too_far_sql} ORDER BY match_weight DESC, 1, 2",
        [params.max_distance_m],
    ).fetchall()
    pairs = []
    for row in rows:
        evidence = {}
        for i, name in enumerate(names):
            evidence[name] = _evidence(name, row[4 + 2 * i], row[5 + 2 * i])
        pairs.append({"a": row[0], "b": row[1], "match_probability": round(float(row[2]), 6),
                      "match_weight": round(float(row[3]), 2), "fields": evidence})
    seconds["pairs"] = round(time.perf_counter() - started, 2)
    return MatchResult(pairs=pairs, compared_pairs=compared, large_blocks=large_blocks,
                       large_block_count=large_count, too_far=int(too_far[0]) if too_far else 0, seconds=seconds)


def _evidence(name: str, level_index: int, weight: float) -> dict[str, Any]:
    """One field's contribution: its level (splink's gamma: -1 absent, then from the least
    specific up) and its match weight log2(m/u)."""
    levels = LEVELS[name][1]
    if level_index < 0:
        return {"niveau": "absent", "poids": 0.0}
    label = levels[len(levels) - 1 - level_index].label
    return {"niveau": label, "poids": round(float(weight), 2)}


def block(con: duckdb.DuckDBPyConnection, params: ClusteringParams) -> int:
    """Table blocked_pairs (splink's form: match_key, join_key_l < join_key_r): each pair sharing at
    least one key once, two acteurs of one source left out unless intra_source. Returns its size."""
    intra = "" if params.intra_source else " AND NOT list_has_any(l.sources, r.sources)"
    selects = " UNION ALL ".join(
        f"SELECT '{i}' AS match_key, l.identifiant_unique AS join_key_l, r.identifiant_unique AS join_key_r"
        f" FROM acteurs l JOIN acteurs r ON l.k_{key} = r.k_{key}"
        f" AND l.identifiant_unique < r.identifiant_unique{intra}"
        for i, key in enumerate(blocking_keys_sql())
    )
    con.execute("CREATE OR REPLACE TABLE blocked_pairs AS SELECT min(match_key) AS match_key, join_key_l,"
                f" join_key_r FROM ({selects}) GROUP BY join_key_l, join_key_r")
    # fetchall: DuckDB 2 keeps a half-read result (fetchone) open and refuses the next statement.
    return int(con.execute("SELECT count(*) FROM blocked_pairs").fetchall()[0][0])
