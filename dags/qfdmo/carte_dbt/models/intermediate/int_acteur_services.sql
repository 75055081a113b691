{{ config(indexes=[{'columns': ['identifiant_unique']}]) }}
{{ per_relation_fallback('qfdmo_revisionacteur_acteur_services', 'revisionacteur_id',
                         'qfdmo_acteur_acteur_services', 'acteur_id', ['acteurservice_id']) }}
