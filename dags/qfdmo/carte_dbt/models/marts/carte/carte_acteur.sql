-- What the map shows (-> qfdmo_displayedacteur): rule 3.
{{ config(indexes=[{'columns': ['identifiant_unique'], 'unique': True}]) }}
select {{ acteur_columns(blank=True) }}
from {{ ref('int_acteur_affichage') }} as a
where a.est_dans_carte
