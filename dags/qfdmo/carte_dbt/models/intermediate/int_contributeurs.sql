-- Who gives a unit its relations (propositions, labels, services, périmètres, sources): every
-- acteur that is not a parent gives its own; a dedup parent gets those of its ACTIF children
-- (rule 2). licence_ouverte is the contributor's, for the open data (rule 6).
{{ config(indexes=[{'columns': ['contributeur_id']}, {'columns': ['unite_id']}]) }}

select identifiant_unique as unite_id, identifiant_unique as contributeur_id,
       false as est_agregat, licence_ouverte
from {{ ref('int_acteur') }}
where not est_parent
union all
select parent_id, identifiant_unique, true, licence_ouverte
from {{ ref('int_acteur') }}
where est_enfant and statut = 'ACTIF'
