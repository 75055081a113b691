"""Assets the DAGs exchange: a run that changes the carte's acteurs announces it, and what derives
from them (the displayed acteurs, the exhaustive view) is recomputed on that announcement."""

from __future__ import annotations

from airflow.sdk import Asset

# Emitted by a source run that wrote rows and by apply_suggestions; compute_acteurs is scheduled on it.
# Not emitted by unchanged re-runs: an event means qfdmo_acteur (or its relations) changed.
CARTE_ACTEURS = Asset(name="carte_acteurs", uri="qfdmo://carte/qfdmo_acteur")
