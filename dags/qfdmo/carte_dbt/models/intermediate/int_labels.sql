{{ config(indexes=[{'columns': ['identifiant_unique']}]) }}
{{ per_relation_fallback('qfdmo_revisionacteur_labels', 'revisionacteur_id',
                         'qfdmo_acteur_labels', 'acteur_id', ['labelqualite_id']) }}
