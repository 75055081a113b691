"""Dedup: find acteurs that are one place across sources and propose parents people validate.

    cluster -> report

`cluster` reads the ACTIF orphans and parents of the exhaustive view (qfdmo_vueacteur), scores the
pairs that blocking generates (splink on DuckDB), clusters them and writes ONE cohorte
(type_action CLUSTERING) with one suggestion per cluster, statut AVALIDER, for review in the
webapp's admin; `dry_run` writes nothing. `report` logs the counts and writes them to
`$QFDMO_DATA_DIR/reports/cluster_acteurs/<run_id>.json`. Validated suggestions are applied by
apply_suggestions. Manual: a run produces work for people, so starting one is a decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task
from qfdmo.airflow.source_tasks import carte_dsn, fail

DEFAULTS = {"match_threshold": 0.9, "max_distance_m": 300.0, "max_block_size": 300}
FIELDS = ["nom", "adresse", "code_postal", "ville", "distance", "siret", "telephone", "url", "email", "acteur_type"]


@dag(
    dag_id="cluster_acteurs",
    dag_display_name="Dédoublonnage · regroupement des acteurs",
    description="Propose des parents pour les acteurs en double entre sources (suggestions à valider)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs would propose the same clusters twice
    tags=["qfdmo", "dedup"],
    default_args={"owner": "qfdmo-data", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "sources": Param([], type="array", items={"type": "string"}, description="Source codes (empty: all)."),
        "acteur_types": Param([], type="array", items={"type": "string"},
                              description="Acteur type codes (empty: all)."),
        "compared_fields": Param(FIELDS, type="array", items={"type": "string", "enum": FIELDS},
                                 description="Fields the model compares."),
        "match_threshold": Param(DEFAULTS["match_threshold"], type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                                 description="Minimum match probability of a pair."),
        "max_distance_m": Param(DEFAULTS["max_distance_m"], type="number", exclusiveMinimum=0,
                                description="Two located acteurs further apart are never paired (metres)."),
        "intra_source": Param(False, type="boolean", description="May two acteurs of one source be merged?"),
        "source_priority": Param([], type="array", items={"type": "string"},
                                 description="Source codes, preferred first, for the parent's fields."),
        "max_block_size": Param(DEFAULTS["max_block_size"], type="integer", minimum=2,
                                description="Blocking keys shared by more acteurs are skipped and reported."),
        "dry_run": Param(False, type="boolean", description="Compute and report, write nothing."),
    },
)
def cluster_acteurs() -> None:
    @task
    def cluster(**context: Any) -> dict[str, Any]:
        from qfdmo.dedup.carte import DedupDataError
        from qfdmo.dedup.params import ClusteringParams, ParamsError
        from qfdmo.dedup.run import run_clustering

        try:
            params = ClusteringParams.parse(dict(context["params"]))
            return run_clustering(carte_dsn(), params, dag_id=context["dag"].dag_id, run_id=context["run_id"])
        except (ParamsError, DedupDataError) as exc:
            fail(str(exc))

    @task(retries=0)
    def report(result: dict[str, Any], **context: Any) -> dict[str, Any]:
        from qfdmo.dedup.run import to_text
        from qfdmo.pipeline import report_path, write_report

        path = write_report(result, report_path(context["dag"].dag_id, context["run_id"]))
        print(to_text(result))
        print(f"Clustering report written to {path}")
        return {"path": str(path), "clusters": result["clusters"], "cohorte_id": result["cohorte_id"]}

    report(cluster())


cluster_acteurs()
