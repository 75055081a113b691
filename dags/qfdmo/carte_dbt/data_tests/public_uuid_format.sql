-- Rule 5: 22 characters of shortuuid's base-57 alphabet.
select identifiant_unique, uuid
from {{ ref('int_public_uuid') }}
where uuid !~ '^[23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz]{22}$'
