-- Propositions de service (acteur, action) with their sous-catégories, and the
-- labels / acteur_services M2M tables, for the three acteur tables.
-- The (a, b) unique constraints also serve lookups by their first column.

CREATE TABLE qfdmo_propositionservice (
    id serial PRIMARY KEY,
    acteur_id varchar(255) NOT NULL REFERENCES qfdmo_acteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    action_id integer NOT NULL REFERENCES qfdmo_action (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT qfdmo_propositionservice_acteur_action_uniq UNIQUE (acteur_id, action_id)
);

CREATE TABLE qfdmo_propositionservice_sous_categories (
    id serial PRIMARY KEY,
    propositionservice_id integer NOT NULL REFERENCES qfdmo_propositionservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    souscategorieobjet_id integer NOT NULL REFERENCES qfdmo_souscategorieobjet (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (propositionservice_id, souscategorieobjet_id)
);

CREATE TABLE qfdmo_revisionpropositionservice (
    id serial PRIMARY KEY,
    acteur_id varchar(255) NOT NULL REFERENCES qfdmo_revisionacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    action_id integer NOT NULL REFERENCES qfdmo_action (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (acteur_id, action_id)
);

CREATE TABLE qfdmo_revisionpropositionservice_sous_categories (
    id serial PRIMARY KEY,
    revisionpropositionservice_id integer NOT NULL
        REFERENCES qfdmo_revisionpropositionservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    souscategorieobjet_id integer NOT NULL REFERENCES qfdmo_souscategorieobjet (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (revisionpropositionservice_id, souscategorieobjet_id)
);

-- 2026: displayed PS ids are text (`PS_<id>`, `RPS_<id>` or `<parent_id>_<action_id>`).
CREATE TABLE qfdmo_displayedpropositionservice (
    id varchar(255) PRIMARY KEY,
    acteur_id varchar(255) NOT NULL REFERENCES qfdmo_displayedacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    action_id integer NOT NULL REFERENCES qfdmo_action (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (acteur_id, action_id)
);

CREATE TABLE qfdmo_displayedpropositionservice_sous_categories (
    id serial PRIMARY KEY,
    displayedpropositionservice_id varchar(255) NOT NULL
        REFERENCES qfdmo_displayedpropositionservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    souscategorieobjet_id integer NOT NULL REFERENCES qfdmo_souscategorieobjet (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (displayedpropositionservice_id, souscategorieobjet_id)
);

CREATE TABLE qfdmo_acteur_labels (
    id serial PRIMARY KEY,
    acteur_id varchar(255) NOT NULL REFERENCES qfdmo_acteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    labelqualite_id integer NOT NULL REFERENCES qfdmo_labelqualite (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (acteur_id, labelqualite_id)
);

CREATE TABLE qfdmo_acteur_acteur_services (
    id serial PRIMARY KEY,
    acteur_id varchar(255) NOT NULL REFERENCES qfdmo_acteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    acteurservice_id integer NOT NULL REFERENCES qfdmo_acteurservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (acteur_id, acteurservice_id)
);

CREATE TABLE qfdmo_revisionacteur_labels (
    id serial PRIMARY KEY,
    revisionacteur_id varchar(255) NOT NULL REFERENCES qfdmo_revisionacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    labelqualite_id integer NOT NULL REFERENCES qfdmo_labelqualite (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (revisionacteur_id, labelqualite_id)
);

CREATE TABLE qfdmo_revisionacteur_acteur_services (
    id serial PRIMARY KEY,
    revisionacteur_id varchar(255) NOT NULL REFERENCES qfdmo_revisionacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    acteurservice_id integer NOT NULL REFERENCES qfdmo_acteurservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (revisionacteur_id, acteurservice_id)
);

CREATE TABLE qfdmo_displayedacteur_labels (
    id serial PRIMARY KEY,
    displayedacteur_id varchar(255) NOT NULL REFERENCES qfdmo_displayedacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    labelqualite_id integer NOT NULL REFERENCES qfdmo_labelqualite (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (displayedacteur_id, labelqualite_id)
);

CREATE TABLE qfdmo_displayedacteur_acteur_services (
    id serial PRIMARY KEY,
    displayedacteur_id varchar(255) NOT NULL REFERENCES qfdmo_displayedacteur (identifiant_unique)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    acteurservice_id integer NOT NULL REFERENCES qfdmo_acteurservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (displayedacteur_id, acteurservice_id)
);
