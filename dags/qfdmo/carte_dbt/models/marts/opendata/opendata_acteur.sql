-- The weekly open-data file « Longue vie aux objets — acteurs de l'économie circulaire » (rule 6):
-- the 44 columns, in order. Rows: units that are displayable except for the à-domicile rule, whose
-- relations come from contributors under OPEN_LICENSE only (a parent only through such children).
{{ config(indexes=[{'columns': ['identifiant'], 'unique': True}]) }}

{%- set actions = ['emprunter', 'preter', 'louer', 'mettreenlocation', 'reparer', 'donner', 'trier',
                   'echanger', 'revendre', 'acheter', 'rapporter'] %}

with unites as (
    select * from {{ ref('int_acteur_affichage') }} where est_dans_opendata
),

sources as (
    select
        r.unite_id,
        string_agg(distinct s.libelle, '|' order by s.libelle) as libelles,
        jsonb_agg(jsonb_build_object(s.libelle, r.identifiant_externe)
                  order by s.libelle, r.identifiant_externe) as contributeurs,
        bool_or(s.code = 'carteco') as depuis_carteco
    from {{ ref('int_unite_sources') }} as r
    join {{ source('webapp', 'qfdmo_source') }} as s on s.id = r.source_id
    where r.licence_ouverte
    group by r.unite_id
),

labels as (
    select r.unite_id, string_agg(distinct l.code, '|' order by l.code) as codes
    from {{ ref('int_unite_labels') }} as r
    join {{ source('webapp', 'qfdmo_labelqualite') }} as l on l.id = r.labelqualite_id
    where r.licence_ouverte
    group by r.unite_id
),

services as (
    select r.unite_id, string_agg(distinct s.code, '|' order by s.code) as codes
    from {{ ref('int_unite_acteur_services') }} as r
    join {{ source('webapp', 'qfdmo_acteurservice') }} as s on s.id = r.acteurservice_id
    where r.licence_ouverte
    group by r.unite_id
),

perimetres as (
    select unite_id, jsonb_agg(jsonb_build_object('type', type, 'valeur', valeur)
                               order by type, valeur) as liste
    from (select distinct unite_id, type, valeur from {{ ref('int_unite_perimetres') }}
          where licence_ouverte) as p
    group by unite_id
),

par_action as (
    select p.unite_id, a.code as action,
           string_agg(distinct sc.code, '|' order by sc.code) as sous_categories,
           jsonb_agg(distinct sc.code order by sc.code) as liste
    from {{ ref('int_unite_propositions') }} as p
    join {{ source('webapp', 'qfdmo_action') }} as a on a.id = p.action_id
    join {{ source('webapp', 'qfdmo_souscategorieobjet') }} as sc on sc.id = p.souscategorieobjet_id
    where p.licence_ouverte
    group by p.unite_id, a.code
),

propositions as (
    select
        unite_id,
        jsonb_agg(jsonb_build_object('action', action, 'sous_categories', liste) order by action) as liste
        {%- for action in actions %},
        max(sous_categories) filter (where action = '{{ action }}') as {{ action }}
        {%- endfor %}
    from par_action
    group by unite_id
)

select
    u.uuid::text as identifiant,
    'Que faire de mes objets et déchets|ADEME|' || coalesce(s.libelles, '') as paternite,
    coalesce(s.contributeurs, '[]'::jsonb)::text as identifiants_des_contributeurs,
    {{ blank_sentinel('u.nom') }} as nom,
    {{ blank_sentinel('u.nom_commercial') }} as nom_commercial,
    {{ blank_sentinel('u.siren') }} as siren,
    {{ blank_sentinel('u.siret') }} as siret,
    {{ blank_sentinel('u.description') }} as description,
    t.code as type_dacteur,
    {{ blank_sentinel('u.url') }} as site_web,
    case when {{ is_mobile_number(blank_sentinel('u.telephone')) }} or coalesce(s.depuis_carteco, false)
         then '' else {{ blank_sentinel('u.telephone') }} end as telephone,
    case when u.lieu_prestation_affiche = 'A_DOMICILE' then '' else {{ blank_sentinel('u.adresse') }} end as adresse,
    case when u.lieu_prestation_affiche = 'A_DOMICILE' then ''
         else {{ blank_sentinel('u.adresse_complement') }} end as complement_dadresse,
    {{ blank_sentinel('u.code_postal') }} as code_postal,
    {{ blank_sentinel('u.ville') }} as ville,
    ''::text as code_commune,
    ''::text as code_epci,
    ''::text as nom_epci,
    st_y(u.location::geometry) as latitude,
    st_x(u.location::geometry) as longitude,
    coalesce(l.codes, '') as qualites_et_labels,
    {{ blank_sentinel('u.public_accueilli') }} as public_accueilli,
    {{ blank_sentinel('u.reprise') }} as reprise,
    case u.exclusivite_de_reprisereparation when true then 'true' when false then 'false' else '' end
        as exclusivite_de_reprisereparation,
    case u.uniquement_sur_rdv when true then 'true' when false then 'false' else '' end as uniquement_sur_rdv,
    coalesce(sv.codes, '') as type_de_services,
    {{ blank_sentinel('u.consignes_dacces') }} as consignes_dacces,
    {{ blank_sentinel('u.horaires_description') }} as horaires_description,
    {{ blank_sentinel('u.horaires_osm') }} as horaires_osm,
    coalesce(u.lieu_prestation_affiche, '') as lieu_prestation,
    coalesce(pe.liste, '[]'::jsonb)::text as perimetreadomicile,
    coalesce(p.liste, '[]'::jsonb)::text as propositions_de_services,
    {%- for action in actions %}
    coalesce(p.{{ action }}, '') as {{ action }},
    {%- endfor %}
    to_char(u.modifie_le at time zone 'Europe/Paris', 'YYYY-MM-DD') as date_de_derniere_modification
from unites as u
join {{ source('webapp', 'qfdmo_acteurtype') }} as t on t.id = u.acteur_type_id
left join sources as s on s.unite_id = u.identifiant_unique
left join labels as l on l.unite_id = u.identifiant_unique
left join services as sv on sv.unite_id = u.identifiant_unique
left join perimetres as pe on pe.unite_id = u.identifiant_unique
left join propositions as p on p.unite_id = u.identifiant_unique
order by u.uuid
