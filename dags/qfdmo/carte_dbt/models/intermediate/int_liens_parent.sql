-- Rule 2, bad input included: one row per revision that names a parent. The link is valid when the
-- parent exists and has no parent itself; otherwise the child is treated as an orphan (shown on
-- its own if displayable) and the reason is kept for the report: parent_absent, cycle (the chain
-- of parents comes back to the child), parent_a_un_parent.
with recursive liens as (
    select
        o.identifiant_unique,
        o.parent_id_revision as parent_id,
        p.identifiant_unique is not null as parent_existe,
        p.parent_id_revision as grand_parent_id
    from {{ ref('int_acteur_overlay') }} as o
    left join {{ ref('int_acteur_overlay') }} as p on p.identifiant_unique = o.parent_id_revision
    where o.parent_id_revision is not null
),

-- Only the links whose parent has a parent can be in a cycle: walk up from those (bounded depth).
remontee (depart, noeud, profondeur) as (
    select identifiant_unique, parent_id, 1
    from liens
    where parent_existe and grand_parent_id is not null
    union all
    select m.depart, l.parent_id, m.profondeur + 1
    from remontee as m
    join liens as l on l.identifiant_unique = m.noeud
    where m.noeud <> m.depart and m.profondeur < 100
),

en_cycle as (
    select distinct depart as identifiant_unique from remontee where noeud = depart
)

select
    l.identifiant_unique,
    l.parent_id,
    case
        when not l.parent_existe then 'parent_absent'
        when c.identifiant_unique is not null then 'cycle'
        when l.grand_parent_id is not null then 'parent_a_un_parent'
    end as lien_invalide
from liens as l
left join en_cycle as c on c.identifiant_unique = l.identifiant_unique
