-- Rule 3: no home-service-only acteur, no acteur for professionals only or for nobody.
select identifiant_unique
from {{ ref('carte_acteur') }}
where lieu_prestation = 'A_DOMICILE' or lower(public_accueilli) in ('aucun', 'professionnels')
