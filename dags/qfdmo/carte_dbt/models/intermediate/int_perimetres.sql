{{ config(indexes=[{'columns': ['identifiant_unique']}]) }}
{{ per_relation_fallback('qfdmo_revisionperimetreadomicile', 'acteur_id',
                         'qfdmo_perimetreadomicile', 'acteur_id', ['type', 'valeur']) }}
