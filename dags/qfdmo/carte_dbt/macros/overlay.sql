{#- Rule 1 of displayed-acteurs.md: a revision overlays its acteur, field by field. -#}

{%- macro overlay_text_columns() -%}
{{ return(['nom', 'description', 'adresse', 'adresse_complement', 'code_postal', 'ville', 'url',
           'email', 'telephone', 'nom_commercial', 'nom_officiel', 'siren', 'siret',
           'identifiant_externe', 'naf_principal', 'commentaires', 'horaires_osm',
           'horaires_description', 'public_accueilli', 'reprise', 'consignes_dacces']) }}
{%- endmacro -%}

{%- macro overlay_value_columns() -%}
{{ return(['acteur_type_id', 'location', 'source_id', 'exclusivite_de_reprisereparation',
           'uniquement_sur_rdv', 'action_principale_id', 'lieu_prestation', 'siret_is_closed',
           'modifie_le']) }}
{%- endmacro -%}

{#- Text: the revision's value when neither NULL nor ''; else the acteur's; '' when both are empty.
    The sentinel __empty__ ("force blank") is kept here; blank_sentinel() removes it where shown. -#}
{%- macro overlay_text(column, revision='r', acteur='a') -%}
coalesce(nullif({{ revision }}.{{ column }}, ''), {{ acteur }}.{{ column }}, '')
{%- endmacro -%}

{#- Other fields: the revision's when not NULL, else the acteur's. -#}
{%- macro overlay_value(column, revision='r', acteur='a') -%}
coalesce({{ revision }}.{{ column }}, {{ acteur }}.{{ column }})
{%- endmacro -%}

{#- Statut (ours): an acteur its source removed (SUPPRIME) is never shown, whatever its revision
    says; otherwise the revision's statut when set, else the acteur's. -#}
{%- macro overlay_statut(revision='r', acteur='a') -%}
case when {{ acteur }}.statut = 'SUPPRIME' then 'SUPPRIME'
     else coalesce(nullif({{ revision }}.statut, ''), {{ acteur }}.statut) end
{%- endmacro -%}

{#- The carte and the open data show the "force blank" sentinel as ''. -#}
{%- macro blank_sentinel(column) -%}
case when {{ column }} = '__empty__' then '' else {{ column }} end
{%- endmacro -%}
