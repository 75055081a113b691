-- Rule 6: mobile numbers (06, 07) are never published.
select identifiant, telephone
from {{ ref('opendata_acteur') }}
where {{ is_mobile_number('telephone') }}
