-- Rules 3 and 6: whether each acteur is on the carte and in the open data, and if not why not.
-- raison_hors_carte, first that applies: enfant (a valid child: its parent is shown instead),
-- sans_type, statut (not ACTIF after the overlay), sans_proposition (no proposition with a
-- sous-catégorie, own or from ACTIF children), public (Aucun / Professionnels), a_domicile.
{{ config(indexes=[{'columns': ['identifiant_unique'], 'unique': True}]) }}

with propositions as (
    select unite_id, true as a_proposition, bool_or(licence_ouverte) as a_proposition_ouverte
    from {{ ref('int_unite_propositions') }}
    where souscategorieobjet_id is not null
    group by unite_id
),

lieu_des_enfants as (
    select c.unite_id, max({{ lieu_prestation_rank('a.lieu_prestation') }}) as rang
    from {{ ref('int_contributeurs') }} as c
    join {{ ref('int_acteur') }} as a on a.identifiant_unique = c.contributeur_id
    where c.est_agregat
    group by c.unite_id
),

acteurs as (
    select
        a.*,
        case when a.est_parent then coalesce({{ lieu_prestation_of_rank('l.rang') }}, a.lieu_prestation)
             else a.lieu_prestation end as lieu_prestation_affiche,
        coalesce(p.a_proposition, false) as a_proposition,
        coalesce(p.a_proposition_ouverte, false) as a_proposition_ouverte,
        {{ public_is_shown(blank_sentinel('a.public_accueilli')) }} as public_affiche
    from {{ ref('int_acteur') }} as a
    left join propositions as p on p.unite_id = a.identifiant_unique
    left join lieu_des_enfants as l on l.unite_id = a.identifiant_unique
),

raisons as (
    select
        *,
        case
            when est_enfant then 'enfant'
            when acteur_type_id is null then 'sans_type'
            when statut <> 'ACTIF' then 'statut'
            when not a_proposition then 'sans_proposition'
            when not public_affiche then 'public'
            when lieu_prestation_affiche = 'A_DOMICILE' then 'a_domicile'
        end as raison_hors_carte
    from acteurs
)

select
    *,
    raison_hors_carte is null as est_dans_carte,
    (not est_enfant and acteur_type_id is not null and statut = 'ACTIF' and public_affiche
     and a_proposition_ouverte) as est_dans_opendata
from raisons
