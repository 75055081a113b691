select distinct r.unite_id::varchar(255) as vueacteur_id, r.source_id
from {{ ref('int_unite_sources') }} as r
join {{ ref('vue_acteur') }} as v on v.identifiant_unique = r.unite_id
