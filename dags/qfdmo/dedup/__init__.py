"""Dedup of acteurs across sources: cluster ACTIF orphans and parents of the exhaustive view
(qfdmo_vueacteur) with splink on DuckDB, propose each cluster as a suggestion people validate in the
webapp's admin, and apply the validated ones.

- params.py: the run's parameters (typed, validated).
- features.py: what is compared, normalised in DuckDB SQL (nom, adresse, phone, URL domain, ...).
- matching.py: blocking and the Fellegi-Sunter model (splink), scored pairs with per-field evidence.
- clusters.py: constrained single linkage, parent choice and parent data, the suggestion changes.
- carte.py: reading the view (COPY out) and writing the cohorte and suggestions (one transaction).
- apply.py: applying validated suggestions, one transaction each.
- run.py: a clustering run end to end, with its report.
"""
