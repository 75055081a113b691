{#- The columns qfdmo_displayedacteur and qfdmo_vueacteur share, from int_acteur_affichage `a`.
    blank=True: the "force blank" sentinel shown as '' (the carte); False: kept (the view).
    code_commune_insee and epci_id stay empty until the geographic reference data is loaded. -#}
{%- macro acteur_columns(blank) -%}
    a.identifiant_unique::varchar(255) as identifiant_unique,
    {%- for column in overlay_text_columns() %}
    {{ blank_sentinel('a.' ~ column) if blank else 'a.' ~ column }} as {{ column }},
    {%- endfor %}
    a.acteur_type_id::integer as acteur_type_id,
    a.location,
    a.source_id,
    a.exclusivite_de_reprisereparation,
    a.uniquement_sur_rdv,
    a.action_principale_id,
    a.lieu_prestation_affiche::varchar(255) as lieu_prestation,
    a.siret_is_closed,
    a.cree_le,
    a.modifie_le,
    a.statut::varchar(255) as statut,
    a.uuid,
    ''::varchar(10) as code_commune_insee,
    null::integer as epci_id
{%- endmacro -%}
