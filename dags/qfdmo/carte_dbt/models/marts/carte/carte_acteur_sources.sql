select distinct r.unite_id::varchar(255) as displayedacteur_id, r.source_id
from {{ ref('int_unite_sources') }} as r
join {{ ref('carte_acteur') }} as d on d.identifiant_unique = r.unite_id
