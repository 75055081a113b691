{{ config(indexes=[{'columns': ['id'], 'unique': True}]) }}
select distinct p.ps_id::varchar as id, p.action_id, p.unite_id::varchar(255) as acteur_id
from {{ ref('int_unite_propositions') }} as p
join {{ ref('carte_acteur') }} as d on d.identifiant_unique = p.unite_id
where p.souscategorieobjet_id is not null
