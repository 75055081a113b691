-- Propositions of each unit. A parent's are one per action, id <parent>_<action_id>, with the
-- union of its ACTIF children's sous-catégories (rule 2); the others keep their own ids.
-- A table: six models read it (the carte's and the view's propositions, the affichage, the open data).
{{ config(indexes=[{'columns': ['unite_id']}]) }}
select distinct
    c.unite_id,
    case when c.est_agregat then c.unite_id || '_' || p.action_id else p.ps_id end as ps_id,
    p.action_id,
    p.souscategorieobjet_id,
    c.licence_ouverte
from {{ ref('int_contributeurs') }} as c
join {{ ref('int_propositions') }} as p on p.identifiant_unique = c.contributeur_id
