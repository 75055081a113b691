select distinct r.unite_id::varchar(255) as displayedacteur_id, r.acteurservice_id
from {{ ref('int_unite_acteur_services') }} as r
join {{ ref('carte_acteur') }} as d on d.identifiant_unique = r.unite_id
