select distinct p.ps_id::varchar as vuepropositionservice_id, p.souscategorieobjet_id
from {{ ref('int_unite_propositions') }} as p
join {{ ref('vue_acteur') }} as v on v.identifiant_unique = p.unite_id
where p.souscategorieobjet_id is not null
