"""The SQL of stage, checks, diff and apply, in one place.

Each template is psycopg ``sql.SQL`` text: ``{name}`` placeholders take identifiers or composed
fragments (``q(TEMPLATE, name=...)``), ``%(name)s`` / ``%s`` take values at execution. Column lists
that follow the acteur column declaration (staging_format.ACTEUR_FIELDS) are composed by the
callers and passed in as fragments.
"""

from __future__ import annotations

from psycopg import sql


def q(template: str, **fragments: sql.Composable) -> sql.Composed:
    """`template` with its `{name}` placeholders filled."""
    return sql.SQL(template).format(**fragments)


# --------------------------------------------------------------------- stage

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"
DROP_TABLE = "DROP TABLE IF EXISTS {t}"
CREATE_RAW = "CREATE UNLOGGED TABLE {t} ({defs}) WITH (autovacuum_enabled = false)"
# FREEZE: the table was created by the same transaction, so its rows can be written frozen and the
# merge that reads them sets no hint bits (it would otherwise rewrite every page it reads).
COPY_IN = "COPY {t} FROM STDIN (FREEZE)"
COUNT = "SELECT count(*) FROM {t}"

# One row per (acteur, action) with the union of its sous-catégories over duplicate rows; unknown
# codes become NULL (action) or -1 (sous-catégorie) ids, which the checks turn into a StagingError.
MERGE_PROPOSITIONS = """
    CREATE UNLOGGED TABLE {p} WITH (autovacuum_enabled = false) AS
    SELECT iu COLLATE "default" AS identifiant_unique, action_id,
           array_agg(souscategorie_id) FILTER (WHERE souscategorie_id IS NOT NULL) AS souscategorie_ids
    FROM (
        SELECT DISTINCT r.identifiant_unique COLLATE "C" AS iu, ac.id AS action_id,
               CASE WHEN coalesce(r.sous_categorie_code, '') <> '' THEN coalesce(sc.id, -1) END
                   AS souscategorie_id
        FROM {raw} r
        LEFT JOIN qfdmo_action ac ON ac.code = r.action_code
        LEFT JOIN qfdmo_souscategorieobjet sc ON sc.code = r.sous_categorie_code
    ) x
    GROUP BY iu, action_id
"""

# One row per (acteur, label) or (acteur, service), in key order; unknown codes give NULL ids.
MERGE_CODES = """
    CREATE UNLOGGED TABLE {merged} WITH (autovacuum_enabled = false) AS
    SELECT iu COLLATE "default" AS identifiant_unique, {id} FROM (
        SELECT DISTINCT r.identifiant_unique COLLATE "C" AS iu, x.id AS {id}
        FROM {raw} r LEFT JOIN {reference} x ON x.code = r.{code}
    ) x
    ORDER BY iu, {id}
"""

CREATE_SETS = (
    "CREATE UNLOGGED TABLE {sets} (identifiant_unique text PRIMARY KEY, value bigint NOT NULL)"
    " WITH (autovacuum_enabled = false)"
)

# One row per acteur, the first in feed order winning for scalar columns; codes resolved to ids
# ({code_ids}, through {code_joins}), the coordinates made a geography as the webapp's column (its
# distances are in metres).
MERGE_ACTEURS = """
    CREATE UNLOGGED TABLE {a} WITH (autovacuum_enabled = false) AS
    SELECT DISTINCT ON (r.identifiant_unique COLLATE "C")
        r.identifiant_unique, {scalar_columns}, {code_ids},
        CASE WHEN r.latitude IS NOT NULL AND r.longitude IS NOT NULL
             THEN ST_SetSRID(ST_MakePoint(r.longitude, r.latitude), 4326)::geography END AS location,
        {codes}
    FROM {raw} r
    {code_joins}
    ORDER BY r.identifiant_unique COLLATE "C", r.row_number
"""

# -------------------------------------------------------------------- checks

CHECK_COUNTS = "SELECT {checks} FROM {a}"
# qfdmo_acteur allows one ACTIF acteur per (source, identifiant_externe).
CHECK_COLLISIONS = (
    "SELECT source_code, identifiant_externe, count(*) FROM {a}"
    " GROUP BY source_code, identifiant_externe HAVING count(*) > 1 ORDER BY 3 DESC, 1, 2 LIMIT 5"
)
# Acteurs whose identifiant_unique is not the one qfdmo.sources.rules.identifiant_unique derives from
# (source_code, identifiant_externe): only they can collide (a count of CHECK_COUNTS).
NOT_DERIVED_IDENTIFIANTS = (
    "count(*) FILTER (WHERE identifiant_unique IS DISTINCT FROM"
    " replace(replace(source_code || '_' || identifiant_externe, '/', '-'), ' ', ''))"
)
ADD_PRIMARY_KEY = "ALTER TABLE {a} ADD PRIMARY KEY (identifiant_unique)"
ANALYZE_KEY = "ANALYZE {t} (identifiant_unique)"
CHECK_SET_COUNTS = "SELECT {conditions} FROM {x}"
# Rows of the three sets whose identifiant_unique has no acteur line: one anti-join, so the acteurs'
# keys are hashed once for the three.
CHECK_ORPHANS = """
    SELECT name, count(*) FROM (
        SELECT 'propositions' AS name, identifiant_unique FROM {p}
        UNION ALL
        SELECT 'labels', identifiant_unique FROM {l}
        UNION ALL
        SELECT 'services', identifiant_unique FROM {s}
    ) x
    WHERE NOT EXISTS (SELECT FROM {a} a WHERE a.identifiant_unique = x.identifiant_unique)
    GROUP BY name
"""
VALUES_OUTSIDE = "SELECT {c}, count(*) FROM {a} WHERE NOT ({c} = ANY(%s)) GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
UNKNOWN_CODES = (
    "SELECT r.{c}, count(*) FROM {raw} r LEFT JOIN {ref} x ON x.code = r.{c}"
    " WHERE x.id IS NULL AND coalesce(r.{c}, '') <> ''"
    " GROUP BY r.{c} ORDER BY count(*) DESC, r.{c} LIMIT 20"
)

# ---------------------------------------------------------------------- diff

# One row per new/changed/inactive staged acteur and per ACTIF acteur of the sources that left
# the feed; unchanged acteurs are only counted.
CREATE_DIFF = """
    CREATE UNLOGGED TABLE {d} WITH (autovacuum_enabled = false) AS
    WITH db_sig AS ({db_signatures})
    SELECT * FROM (
        SELECT m.identifiant_unique,
               CASE
                   WHEN a.identifiant_unique IS NULL THEN 'new'
                   WHEN a.statut = 'INACTIF' THEN 'inactive'
                   WHEN a.statut <> 'ACTIF'
                        OR ({managed}) IS DISTINCT FROM ({staged})
                        OR coalesce(sig.value, 0) <> coalesce(db_sig.value, 0) THEN 'changed'
               END AS kind
        FROM {a} m
        LEFT JOIN qfdmo_acteur a ON a.identifiant_unique = m.identifiant_unique
        LEFT JOIN db_sig ON db_sig.acteur = m.identifiant_unique
        LEFT JOIN {sets} sig ON sig.identifiant_unique = m.identifiant_unique
    ) staged
    WHERE kind IS NOT NULL
    UNION ALL
    SELECT a.identifiant_unique, 'to_deactivate'
    FROM qfdmo_acteur a
    JOIN qfdmo_source s ON s.id = a.source_id
    WHERE s.code = ANY(%(sources)s) AND a.statut = 'ACTIF'
      AND NOT EXISTS (SELECT FROM {a} m WHERE m.identifiant_unique = a.identifiant_unique)
"""
# When no staged acteur is in the carte yet (a first load), every one is new: the diff table then
# holds the acteurs to deactivate only, and the new ones are the staged acteurs themselves.
ANY_STAGED_IN_CARTE = (
    "SELECT EXISTS (SELECT FROM {a} m JOIN qfdmo_acteur a ON a.identifiant_unique = m.identifiant_unique)"
)
CREATE_DIFF_EVERY_NEW = """
    CREATE UNLOGGED TABLE {d} WITH (autovacuum_enabled = false) AS
    SELECT a.identifiant_unique::text AS identifiant_unique, text 'to_deactivate' AS kind
    FROM qfdmo_acteur a
    JOIN qfdmo_source s ON s.id = a.source_id
    WHERE s.code = ANY(%(sources)s) AND a.statut = 'ACTIF'
"""
STAGED_EXAMPLES = "SELECT identifiant_unique FROM {a} LIMIT %s"
ANALYZE = "ANALYZE {t}"
DIFF_COUNTS = "SELECT kind, count(*) FROM {d} GROUP BY kind"
ACTIVE_BEFORE = (
    "SELECT count(*) FROM qfdmo_acteur a JOIN qfdmo_source s ON s.id = a.source_id"
    " WHERE s.code = ANY(%s) AND a.statut = 'ACTIF'"
)
DIFF_EXAMPLES = "SELECT identifiant_unique FROM {d} WHERE kind = %s LIMIT %s"

# The qfdmo side of the set signatures: the sets of the staged acteurs as the carte holds them.
DB_PROPOSITIONS = (
    "SELECT ps.acteur_id AS acteur, ps.action_id FROM qfdmo_propositionservice ps"
    " JOIN {a} m ON m.identifiant_unique = ps.acteur_id"
)
DB_SOUS_CATEGORIES = (
    "SELECT ps.acteur_id AS acteur, ps.action_id, psc.souscategorieobjet_id AS souscategorie_id"
    " FROM qfdmo_propositionservice ps JOIN {a} m ON m.identifiant_unique = ps.acteur_id"
    " JOIN qfdmo_propositionservice_sous_categories psc ON psc.propositionservice_id = ps.id"
)
DB_LABELS = (
    "SELECT x.acteur_id AS acteur, x.labelqualite_id FROM qfdmo_acteur_labels x"
    " JOIN {a} m ON m.identifiant_unique = x.acteur_id"
)
DB_SERVICES = (
    "SELECT x.acteur_id AS acteur, x.acteurservice_id FROM qfdmo_acteur_acteur_services x"
    " JOIN {a} m ON m.identifiant_unique = x.acteur_id"
)

# The staged side: {only} restricts them to the acteurs to sign (or is empty).
STAGED_PROPOSITIONS = "SELECT identifiant_unique AS acteur, action_id FROM {p}{only}"
STAGED_SOUS_CATEGORIES = (
    "SELECT identifiant_unique AS acteur, action_id, unnest(souscategorie_ids) AS souscategorie_id FROM {p}{only}"
)
STAGED_LABELS = "SELECT identifiant_unique AS acteur, labelqualite_id FROM {l}{only}"
STAGED_SERVICES = "SELECT identifiant_unique AS acteur, acteurservice_id FROM {s}{only}"
ONLY_TODO = " JOIN {todo} USING (identifiant_unique)"

# Staged acteurs that exist in qfdmo_acteur and have no signature yet.
CREATE_TODO = (
    "CREATE UNLOGGED TABLE {todo} WITH (autovacuum_enabled = false) AS"
    " SELECT m.identifiant_unique FROM {a} m"
    " WHERE EXISTS (SELECT FROM qfdmo_acteur a WHERE a.identifiant_unique = m.identifiant_unique)"
    " AND NOT EXISTS (SELECT FROM {sets} s WHERE s.identifiant_unique = m.identifiant_unique)"
)
INSERT_SIGNATURES = "INSERT INTO {sets} (identifiant_unique, value) {signatures}"

# (acteur, value): per acteur, the XOR of 64-bit hashes of its (action), (action, sous-catégorie),
# label and service ids. Order-independent, so no sorting. The one definition for both sides of
# the diff (the qfdmo tables and the staged run): their seeds and encodings cannot drift apart.
SET_SIGNATURES = """
    SELECT acteur, bit_xor(h) AS value FROM (
        SELECT acteur, hashint8extended(action_id, 1) AS h FROM ({propositions}) x
        UNION ALL
        SELECT acteur, hashint8extended((action_id::bigint << 32) | souscategorie_id, 2)
        FROM ({sous_categories}) x
        UNION ALL
        SELECT acteur, hashint8extended(labelqualite_id, 3) FROM ({labels}) x
        UNION ALL
        SELECT acteur, hashint8extended(acteurservice_id, 4) FROM ({services}) x
    ) h
    GROUP BY acteur
"""

CHANGED_ACTEURS = "SELECT identifiant_unique FROM {d} WHERE kind = 'changed'"
COUNT_CHANGED = "SELECT count(*) FROM {d} WHERE kind = 'changed'"
CHANGED_COLUMN_COUNTS = (
    "SELECT {per_column}, count(*) FILTER (WHERE a.statut = 'SUPPRIME') FROM {d} d"
    " JOIN {a} m ON m.identifiant_unique = d.identifiant_unique"
    " JOIN qfdmo_acteur a ON a.identifiant_unique = d.identifiant_unique"
    " WHERE d.kind = 'changed'"
)
SCALAR_CHANGED = (
    "SELECT count(*) FROM {d} d JOIN {a} m ON m.identifiant_unique = d.identifiant_unique"
    " JOIN qfdmo_acteur a ON a.identifiant_unique = d.identifiant_unique"
    " WHERE d.kind = 'changed' AND (a.statut <> 'ACTIF' OR ({managed}) IS DISTINCT FROM ({staged}))"
)

# --------------------------------------------------------------------- apply

ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(%s)"
DEACTIVATE = (
    "UPDATE qfdmo_acteur a SET statut = 'SUPPRIME', modifie_le = now()"
    " FROM {d} d WHERE d.kind = 'to_deactivate'"
    " AND a.identifiant_unique = d.identifiant_unique AND a.statut = 'ACTIF'"
)
UPDATE_CHANGED = (
    "UPDATE qfdmo_acteur a SET {assignments}, statut = 'ACTIF', modifie_le = now()"
    " FROM {m} m JOIN {d} d ON d.identifiant_unique = m.identifiant_unique"
    " WHERE d.kind = 'changed' AND a.identifiant_unique = m.identifiant_unique"
)
# A semi-join hashes the narrow diff rows, not the wide staged acteurs.
ONLY_NEW = (
    " WHERE EXISTS (SELECT FROM {d} d WHERE d.identifiant_unique = m.identifiant_unique AND d.kind = 'new')"
)
INSERT_ACTEURS = (
    "INSERT INTO qfdmo_acteur (identifiant_unique, {columns}, statut)"
    " SELECT m.identifiant_unique, {staged_columns}, 'ACTIF' FROM {m} m{new_rows}{new_order}"
)
NEW_ORDER = ' ORDER BY m.identifiant_unique COLLATE "C"'
DELETE_SOUS_CATEGORIES = (
    "DELETE FROM qfdmo_propositionservice_sous_categories psc USING qfdmo_propositionservice ps"
    " WHERE psc.propositionservice_id = ps.id AND ps.acteur_id IN ({changed})"
)
DELETE_PROPOSITIONS = "DELETE FROM qfdmo_propositionservice WHERE acteur_id IN ({changed})"
DELETE_LABELS = "DELETE FROM qfdmo_acteur_labels WHERE acteur_id IN ({changed})"
DELETE_SERVICES = "DELETE FROM qfdmo_acteur_acteur_services WHERE acteur_id IN ({changed})"
ONLY_WRITTEN = (
    " WHERE x.identifiant_unique IN (SELECT identifiant_unique FROM {d} WHERE kind IN ('new', 'changed'))"
)
WRITTEN_ORDER = ' ORDER BY x.identifiant_unique COLLATE "C", 2'
# Resolved once: pg_get_serial_sequence() inside the query would run for every row.
PROPOSITION_SEQUENCE = "SELECT pg_get_serial_sequence('qfdmo_propositionservice', 'id')"
# One statement writes both tables: each proposition draws its id once, in (acteur_id, action_id)
# order so that both indexes of qfdmo_propositionservice and the sous-catégories' one receive
# their keys in order; the sous-catégories are unnested from the same materialised rows instead
# of being joined back on (acteur_id, action_id).
INSERT_PROPOSITIONS = """
    WITH ps AS MATERIALIZED (
        SELECT nextval({sequence}::regclass)::int AS id, identifiant_unique, action_id, souscategorie_ids
        FROM (SELECT x.identifiant_unique, x.action_id, x.souscategorie_ids
              FROM {p} x{written_rows}{written_order}) x
    ), inserted_ps AS (
        INSERT INTO qfdmo_propositionservice (id, acteur_id, action_id)
        SELECT id, identifiant_unique, action_id FROM ps
    ), inserted_psc AS (
        INSERT INTO qfdmo_propositionservice_sous_categories (propositionservice_id, souscategorieobjet_id)
        SELECT id, unnest(souscategorie_ids) FROM ps
    )
    SELECT count(*), coalesce(sum(cardinality(souscategorie_ids)), 0) FROM ps
"""
INSERT_LABELS = (
    "INSERT INTO qfdmo_acteur_labels (acteur_id, labelqualite_id)"
    " SELECT x.identifiant_unique, x.labelqualite_id FROM {l} x{written_rows}{written_order}"
)
INSERT_SERVICES = (
    "INSERT INTO qfdmo_acteur_acteur_services (acteur_id, acteurservice_id)"
    " SELECT x.identifiant_unique, x.acteurservice_id FROM {s} x{written_rows}{written_order}"
)
CHECK_DEFERRED = "SET CONSTRAINTS ALL IMMEDIATE"
ANALYZE_COLUMNS = "ANALYZE {t} ({columns})"
REPLICA_ROLE = "SET LOCAL session_replication_role = replica"
KEY_SHARE_ALL = "SELECT count(*) FROM (SELECT FROM {t} FOR KEY SHARE) x"
