-- Rule 1: every acteur and every revision-only row (dedup parents), the revision laid over its
-- acteur. The "force blank" sentinel __empty__ is still there (the exhaustive view keeps it).
{{ config(indexes=[{'columns': ['identifiant_unique'], 'unique': True}, {'columns': ['parent_id_revision']}]) }}

select
    coalesce(r.identifiant_unique, a.identifiant_unique) as identifiant_unique,
    {%- for column in overlay_text_columns() %}
    {{ overlay_text(column) }} as {{ column }},
    {%- endfor %}
    {%- for column in overlay_value_columns() %}
    {{ overlay_value(column) }} as {{ column }},
    {%- endfor %}
    coalesce(a.cree_le, r.cree_le) as cree_le,
    {{ overlay_statut() }} as statut,
    nullif(r.parent_id, '') as parent_id_revision,
    r.identifiant_unique is not null as revision_existe,
    a.identifiant_unique is not null as acteur_existe
from {{ source('webapp', 'qfdmo_acteur') }} as a
full join {{ source('webapp', 'qfdmo_revisionacteur') }} as r
    on r.identifiant_unique = a.identifiant_unique
