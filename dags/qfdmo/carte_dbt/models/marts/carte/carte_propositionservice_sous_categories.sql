select distinct p.ps_id::varchar as displayedpropositionservice_id, p.souscategorieobjet_id
from {{ ref('int_unite_propositions') }} as p
join {{ ref('carte_acteur') }} as d on d.identifiant_unique = p.unite_id
where p.souscategorieobjet_id is not null
