"""The carte's dbt project parses without a database, and the DAG deployment ships all of it."""

from __future__ import annotations

import sys
from pathlib import Path

from qfdmo.carte.dbt_runner import PROJECT_DIR, _profile_environment

from devstack.config import REPO_ROOT


def test_the_deployment_ships_every_file_of_the_project():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from dags_delivery.deploy import local_files

    shipped = set(local_files(REPO_ROOT / "dags"))
    project = {p.relative_to(REPO_ROOT / "dags").as_posix() for p in PROJECT_DIR.rglob("*") if p.is_file()}
    assert {"qfdmo/carte_dbt/dbt_project.yml", "qfdmo/carte_dbt/profiles.yml"} <= project
    assert any(p.startswith("qfdmo/carte_dbt/data_tests/") for p in project)
    assert project <= shipped


def test_project_parses_and_every_mart_has_tests(tmp_path: Path):
    from dbt.cli.main import dbtRunner

    with _profile_environment("postgresql://nobody@127.0.0.1:1/none", tmp_path):
        outcome = dbtRunner().invoke(["parse", "--project-dir", str(PROJECT_DIR), "--profiles-dir",
                                      str(PROJECT_DIR), "--target-path", str(tmp_path / "target"),
                                      "--log-path", str(tmp_path / "logs"), "--quiet"])
    assert outcome.success, outcome.exception
    manifest = outcome.result
    models = {n.name for n in manifest.nodes.values() if n.resource_type == "model"}
    tested = {m for n in manifest.nodes.values() if n.resource_type == "test"
              for m in (dep.split(".")[-1] for dep in n.depends_on.nodes)}
    marts = {m for m in models if m.startswith(("carte_acteur", "vue_acteur", "opendata_"))}
    assert marts and marts - {"carte_acteur_sources", "vue_acteur_labels", "vue_acteur_acteur_services",
                              "vue_acteur_sources"} <= tested
