-- Rule 5: the public uuid of every identifiant (shortuuid's uuid5 in base 57, computed by the SQL
-- function of platform migration 0003). It must never change for an identifiant, so it is computed
-- once and kept: each build only adds the identifiants it has not seen.
{{ config(
    materialized='incremental',
    unique_key='identifiant_unique',
    incremental_strategy='append',
    unlogged=False,
    post_hook='create unique index if not exists int_public_uuid_uuid_key on {{ this }} (uuid)',
    indexes=[{'columns': ['identifiant_unique'], 'unique': True}],
) }}

with identifiants as (
    select identifiant_unique from {{ source('webapp', 'qfdmo_acteur') }}
    union
    select identifiant_unique from {{ source('webapp', 'qfdmo_revisionacteur') }}
)

select
    i.identifiant_unique::varchar(255) as identifiant_unique,
    {{ target.schema }}.public_uuid(i.identifiant_unique)::varchar(255) as uuid
from identifiants as i
{% if is_incremental() %}
where not exists (select 1 from {{ this }} as known where known.identifiant_unique = i.identifiant_unique)
{% endif %}
