-- Every acteur after the overlay, with its place in the dedup tree (valid parent link, children)
-- and its source's licence.
{{ config(indexes=[{'columns': ['identifiant_unique'], 'unique': True}, {'columns': ['parent_id']}]) }}

with enfants as (
    select
        parent_id,
        count(*) as nombre_enfants,
        jsonb_agg(identifiant_unique order by identifiant_unique) as liste_enfants
    from {{ ref('int_liens_parent') }}
    where lien_invalide is null
    group by parent_id
)

select
    o.*,
    u.uuid,
    case when l.lien_invalide is null then l.parent_id end as parent_id,
    l.lien_invalide,
    l.parent_id is not null and l.lien_invalide is null as est_enfant,
    e.parent_id is not null as est_parent,
    coalesce(e.nombre_enfants, 0)::integer as nombre_enfants,
    e.liste_enfants,
    s.code as source_code,
    coalesce(s.licence = 'OPEN_LICENSE', false) as licence_ouverte
from {{ ref('int_acteur_overlay') }} as o
join {{ ref('int_public_uuid') }} as u on u.identifiant_unique = o.identifiant_unique
left join {{ ref('int_liens_parent') }} as l on l.identifiant_unique = o.identifiant_unique
left join enfants as e on e.parent_id = o.identifiant_unique
left join {{ source('webapp', 'qfdmo_source') }} as s on s.id = o.source_id
