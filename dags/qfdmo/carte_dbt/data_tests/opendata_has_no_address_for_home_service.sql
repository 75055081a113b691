-- Rule 6: acteurs that only serve at home are published without their address.
select identifiant
from {{ ref('opendata_acteur') }}
where lieu_prestation = 'A_DOMICILE' and (adresse <> '' or complement_dadresse <> '')
