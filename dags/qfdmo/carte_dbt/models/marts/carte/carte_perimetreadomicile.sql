select distinct r.unite_id::varchar(255) as acteur_id, r.type::varchar as type, r.valeur::varchar as valeur
from {{ ref('int_unite_perimetres') }} as r
join {{ ref('carte_acteur') }} as d on d.identifiant_unique = r.unite_id
