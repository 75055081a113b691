-- Acteur tables (Django app `qfdmo`, 2026 model): imported acteurs (what the
-- sources deliver, written by the platform), revisions (human corrections and
-- dedup parents, never written by the ingestion) and displayed acteurs (computed
-- for the map). Text columns are NOT NULL DEFAULT '' as in 2026.

CREATE TABLE qfdmo_acteur (
    identifiant_unique varchar(255) PRIMARY KEY,
    identifiant_externe varchar(255) NOT NULL DEFAULT '',
    nom varchar(255) NOT NULL DEFAULT '',
    nom_commercial varchar(255) NOT NULL DEFAULT '',
    nom_officiel varchar(255) NOT NULL DEFAULT '',
    adresse varchar(255) NOT NULL DEFAULT '',
    adresse_complement varchar(255) NOT NULL DEFAULT '',
    code_postal varchar(10) NOT NULL DEFAULT '',
    ville varchar(255) NOT NULL DEFAULT '',
    url varchar(2048) NOT NULL DEFAULT '',
    email varchar(254) NOT NULL DEFAULT '',
    telephone varchar(255) NOT NULL DEFAULT '',
    naf_principal varchar(255) NOT NULL DEFAULT '',
    siret varchar(14) NOT NULL DEFAULT '',
    siren varchar(9) NOT NULL DEFAULT '',
    siret_is_closed boolean,
    description text NOT NULL DEFAULT '',
    commentaires text NOT NULL DEFAULT '',
    horaires_osm text NOT NULL DEFAULT '',
    horaires_description text NOT NULL DEFAULT '',
    consignes_dacces text NOT NULL DEFAULT '',
    public_accueilli varchar(255) NOT NULL DEFAULT '',
    reprise varchar(255) NOT NULL DEFAULT '',
    exclusivite_de_reprisereparation boolean,
    uniquement_sur_rdv boolean,
    -- '' = not given by the source (the webapp then treats it as SUR_PLACE).
    lieu_prestation varchar(255) NOT NULL DEFAULT ''
        CHECK (lieu_prestation IN ('', 'SUR_PLACE', 'A_DOMICILE', 'SUR_PLACE_OU_A_DOMICILE')),
    -- x = longitude, y = latitude; NULL for digital acteurs.
    location geometry(Point, 4326),
    acteur_type_id integer REFERENCES qfdmo_acteurtype (id)
        DEFERRABLE INITIALLY DEFERRED,
    -- NULL only for dedup parents (which live in qfdmo_revisionacteur).
    source_id integer REFERENCES qfdmo_source (id)
        DEFERRABLE INITIALLY DEFERRED,
    action_principale_id integer REFERENCES qfdmo_action (id)
        ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    statut varchar(255) NOT NULL DEFAULT 'ACTIF'
        CHECK (statut IN ('ACTIF', 'INACTIF', 'SUPPRIME')),
    cree_le timestamptz NOT NULL DEFAULT now(),
    modifie_le timestamptz NOT NULL DEFAULT now()
);

-- One ACTIF acteur per partner id and source.
CREATE UNIQUE INDEX qfdmo_acteur_source_identifiant_externe_actif_uniq
    ON qfdmo_acteur (source_id, identifiant_externe) WHERE statut = 'ACTIF';
-- Ingestion reads and deactivates the acteurs of a set of sources.
CREATE INDEX qfdmo_acteur_source_id_idx ON qfdmo_acteur (source_id);
CREATE INDEX qfdmo_acteur_acteur_type_id_idx ON qfdmo_acteur (acteur_type_id);
-- No spatial index here: the map reads qfdmo_displayedacteur, and a GiST index
-- would slow every bulk load of imported acteurs.

-- Same column set; revisions only hold what a human corrected.
CREATE TABLE qfdmo_revisionacteur (
    LIKE qfdmo_acteur INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (identifiant_unique),
    -- A dedup parent is a revision without acteur; its children point to it.
    parent_id varchar(255) REFERENCES qfdmo_revisionacteur (identifiant_unique)
        ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED,
    parent_reason varchar(255) NOT NULL DEFAULT '',
    CHECK (parent_id IS NULL OR parent_id <> identifiant_unique),
    FOREIGN KEY (acteur_type_id) REFERENCES qfdmo_acteurtype (id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (source_id) REFERENCES qfdmo_source (id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (action_principale_id) REFERENCES qfdmo_action (id)
        ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX qfdmo_revisionacteur_parent_id_idx ON qfdmo_revisionacteur (parent_id);
CREATE INDEX qfdmo_revisionacteur_source_id_idx ON qfdmo_revisionacteur (source_id);

CREATE TABLE qfdmo_displayedacteur (
    LIKE qfdmo_acteur INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (identifiant_unique),
    -- 22-char base57, deterministic from identifiant_unique (computed downstream).
    uuid varchar(255) UNIQUE,
    FOREIGN KEY (acteur_type_id) REFERENCES qfdmo_acteurtype (id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (source_id) REFERENCES qfdmo_source (id) DEFERRABLE INITIALLY DEFERRED,
    FOREIGN KEY (action_principale_id) REFERENCES qfdmo_action (id)
        ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX qfdmo_displayedacteur_location_idx ON qfdmo_displayedacteur USING gist (location);

CREATE TABLE qfdmo_displayedacteur_sources (
    id serial PRIMARY KEY,
    displayedacteur_id varchar(255) NOT NULL REFERENCES qfdmo_displayedacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    source_id integer NOT NULL REFERENCES qfdmo_source (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (displayedacteur_id, source_id)
);
