-- Each acteur's own source (and its identifiant there), for the units' sources.
{{ config(materialized='ephemeral') }}
select identifiant_unique, source_id, identifiant_externe
from {{ ref('int_acteur') }}
where source_id is not null
