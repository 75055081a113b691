-- The exhaustive view (-> qfdmo_vueacteur): every acteur and parent after the overlay, children
-- included, no statut filter (rule 4). Only rows without an acteur type (NOT NULL in the webapp)
-- are left out; the report counts them (raison_hors_carte = sans_type).
{{ config(indexes=[{'columns': ['identifiant_unique'], 'unique': True}]) }}
select
    {{ acteur_columns(blank=False) }},
    case when p.identifiant_unique is not null then a.parent_id end::varchar(255) as parent_id,
    a.revision_existe,
    a.est_parent,
    a.liste_enfants,
    a.nombre_enfants,
    a.est_dans_carte,
    a.est_dans_opendata,
    st_y(a.location::geometry)::double precision as latitude,
    st_x(a.location::geometry)::double precision as longitude
from {{ ref('int_acteur_affichage') }} as a
left join {{ ref('int_acteur') }} as p
    on p.identifiant_unique = a.parent_id and p.acteur_type_id is not null
where a.acteur_type_id is not null
