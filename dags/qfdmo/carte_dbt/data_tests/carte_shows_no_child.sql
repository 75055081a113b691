-- Rule 2: children are never displayed themselves (their parent is).
select d.identifiant_unique
from {{ ref('carte_acteur') }} as d
join {{ ref('int_acteur') }} as a on a.identifiant_unique = d.identifiant_unique
where a.est_enfant
