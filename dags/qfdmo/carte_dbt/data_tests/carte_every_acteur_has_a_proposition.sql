-- Rule 3: every displayed acteur has at least one proposition with at least one sous-catégorie.
select d.identifiant_unique
from {{ ref('carte_acteur') }} as d
where not exists (
    select 1
    from {{ ref('carte_propositionservice') }} as p
    join {{ ref('carte_propositionservice_sous_categories') }} as sc
        on sc.displayedpropositionservice_id = p.id
    where p.acteur_id = d.identifiant_unique
)
