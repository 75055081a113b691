-- Reference tables of the carte database (Django app `qfdmo`, 2026 model).
-- Serial ids, unique natural `code` used by the pipelines. Foreign keys are
-- DEFERRABLE INITIALLY DEFERRED like the ones Django creates.

CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE qfdmo_actiondirection (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    libelle varchar(255) NOT NULL DEFAULT '',
    "order" integer NOT NULL DEFAULT 0
);

CREATE TABLE qfdmo_groupeaction (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    afficher boolean NOT NULL DEFAULT true,
    description varchar(255),
    "order" integer NOT NULL DEFAULT 0,
    couleur varchar(255) NOT NULL DEFAULT '',
    couleur_claire varchar(255) NOT NULL DEFAULT '',
    icon varchar(64) NOT NULL DEFAULT ''
);

CREATE TABLE qfdmo_action (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    libelle varchar(255) NOT NULL DEFAULT '',
    libelle_groupe varchar(255) NOT NULL DEFAULT '',
    afficher boolean NOT NULL DEFAULT true,
    description varchar(255),
    "order" integer NOT NULL DEFAULT 0,
    couleur varchar(255) NOT NULL DEFAULT '',
    icon varchar(64) NOT NULL DEFAULT '',
    groupe_action_id integer REFERENCES qfdmo_groupeaction (id)
        ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX qfdmo_action_groupe_action_id_idx ON qfdmo_action (groupe_action_id);

CREATE TABLE qfdmo_action_directions (
    id serial PRIMARY KEY,
    action_id integer NOT NULL REFERENCES qfdmo_action (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    actiondirection_id integer NOT NULL REFERENCES qfdmo_actiondirection (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (action_id, actiondirection_id)
);

CREATE TABLE qfdmo_acteurtype (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE CHECK (code ~ '^[0-9a-z_]+$'),
    libelle varchar(255) NOT NULL DEFAULT ''
);

CREATE TABLE qfdmo_acteurservice (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE CHECK (code ~ '^[0-9a-z_]+$'),
    libelle varchar(255) NOT NULL DEFAULT ''
);

CREATE TABLE qfdmo_acteurservice_actions (
    id serial PRIMARY KEY,
    acteurservice_id integer NOT NULL REFERENCES qfdmo_acteurservice (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    action_id integer NOT NULL REFERENCES qfdmo_action (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    UNIQUE (acteurservice_id, action_id)
);

-- Label codes keep their historical casing (bonusrepar_ABJ_TH, BonusRepar_ASL):
-- no code CHECK here, as in the webapp.
CREATE TABLE qfdmo_labelqualite (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    libelle varchar(255) NOT NULL DEFAULT '',
    afficher boolean NOT NULL DEFAULT true,
    bonus boolean NOT NULL DEFAULT false,
    type_enseigne boolean NOT NULL DEFAULT false,
    url varchar(2048) NOT NULL DEFAULT '',
    "order" integer NOT NULL DEFAULT 0
);

CREATE TABLE qfdmo_source (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE CHECK (code ~ '^[0-9a-z_]+$'),
    libelle varchar(255) NOT NULL DEFAULT '',
    afficher boolean NOT NULL DEFAULT true,
    url varchar(2048) NOT NULL DEFAULT '',
    logo_file varchar(255) NOT NULL DEFAULT '',
    licence varchar(255) NOT NULL DEFAULT 'NO_LICENSE'
        CHECK (licence IN ('OPEN_LICENSE', 'ODBL', 'CC_BY_NC_SA', 'NO_LICENSE'))
);

CREATE TABLE qfdmo_categorieobjet (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    libelle varchar(255) NOT NULL DEFAULT ''
);

CREATE TABLE qfdmo_souscategorieobjet (
    id serial PRIMARY KEY,
    code varchar(255) NOT NULL UNIQUE,
    libelle varchar(255) NOT NULL DEFAULT '',
    categorie_id integer NOT NULL REFERENCES qfdmo_categorieobjet (id)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    afficher boolean NOT NULL DEFAULT true,
    afficher_carte boolean NOT NULL DEFAULT true,
    reemploi_possible boolean NOT NULL DEFAULT true
);
CREATE INDEX qfdmo_souscategorieobjet_categorie_id_idx ON qfdmo_souscategorieobjet (categorie_id);
