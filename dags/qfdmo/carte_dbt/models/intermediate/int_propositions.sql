-- Each acteur's own propositions de service, one row per sous-catégorie (NULL: a proposition
-- without any), revision's or acteur's by the per-relation fallback (rule 1). Ids: PS_<id> for an
-- acteur's, RPS_<id> for a revision's.
{{ config(indexes=[{'columns': ['identifiant_unique']}]) }}

with revision as (
    select rps.acteur_id as identifiant_unique, 'RPS_' || rps.id as ps_id, rps.action_id,
           sc.souscategorieobjet_id
    from {{ source('webapp', 'qfdmo_revisionpropositionservice') }} as rps
    left join {{ source('webapp', 'qfdmo_revisionpropositionservice_sous_categories') }} as sc
        on sc.revisionpropositionservice_id = rps.id
),

acteur as (
    select ps.acteur_id as identifiant_unique, 'PS_' || ps.id as ps_id, ps.action_id,
           sc.souscategorieobjet_id
    from {{ source('webapp', 'qfdmo_propositionservice') }} as ps
    left join {{ source('webapp', 'qfdmo_propositionservice_sous_categories') }} as sc
        on sc.propositionservice_id = ps.id
    where not exists (
        select 1 from {{ source('webapp', 'qfdmo_revisionpropositionservice') }} as rps
        where rps.acteur_id = ps.acteur_id
    )
)

select * from revision
union all
select * from acteur
