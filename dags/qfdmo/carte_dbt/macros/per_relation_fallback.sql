{#- Rule 1 (ours), for one M2M relation: the revision's rows replace the acteur's when the revision
    has at least one row of that relation; otherwise the acteur's rows are used (never merged).
    `columns` are the relation's own columns, the same in both tables. -#}
{%- macro per_relation_fallback(revision_table, revision_key, acteur_table, acteur_key, columns) -%}
select r.{{ revision_key }} as identifiant_unique{% for c in columns %}, r.{{ c }}{% endfor %}
from {{ source('webapp', revision_table) }} as r
union all
select a.{{ acteur_key }} as identifiant_unique{% for c in columns %}, a.{{ c }}{% endfor %}
from {{ source('webapp', acteur_table) }} as a
where not exists (
    select 1 from {{ source('webapp', revision_table) }} as r
    where r.{{ revision_key }} = a.{{ acteur_key }}
)
{%- endmacro -%}

{#- A relation of the displayed units: each unit's rows come from its contributors (itself, or for
    a dedup parent its ACTIF children), with the contributor's licence for the open data. -#}
{%- macro unit_relation(relation_model, columns) -%}
select distinct c.unite_id{% for col in columns %}, rel.{{ col }}{% endfor %}, c.licence_ouverte
from {{ ref('int_contributeurs') }} as c
join {{ ref(relation_model) }} as rel on rel.identifiant_unique = c.contributeur_id
{%- endmacro -%}
