"""qfdmo.settings: the typed settings of the DAG code, and one ENVIRONMENT vocabulary everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from qfdmo.settings import DEFAULT_DATA_DIR, Environment, Settings, SettingsError, settings

REPO = Path(__file__).resolve().parents[1]
WORDS = {e.value for e in Environment}


def test_defaults_when_nothing_is_set():
    assert Settings.from_env({}) == Settings(
        environment=Environment.DEVELOPMENT,
        data_dir=DEFAULT_DATA_DIR,
        normalise_processes=None,
        carte_db_dsn=None,
    )


def test_values_are_typed():
    parsed = Settings.from_env(
        {
            "ENVIRONMENT": "prod",
            "QFDMO_DATA_DIR": "/data",
            "QFDMO_NORMALISE_PROCESSES": " 0 ",
            "CARTE_DB_DSN": "postgresql://x@h/db",
        }
    )
    assert parsed.environment is Environment.PROD and parsed.environment.syncs_dags_from_s3
    assert parsed.data_dir == Path("/data") and parsed.normalise_processes == 1
    assert parsed.carte_db_dsn == "postgresql://x@h/db"


def test_a_process_count_that_is_not_a_number_falls_back_with_a_warning_naming_the_variable(caplog):
    assert Settings.from_env({"QFDMO_NORMALISE_PROCESSES": "many"}).normalise_processes is None
    assert "QFDMO_NORMALISE_PROCESSES='many' is not a number" in caplog.text


@pytest.mark.parametrize("value", ["dev", "PROD", "preprod ", "local"])
def test_an_unknown_environment_is_an_error_naming_the_variable(value):
    with pytest.raises(SettingsError, match=r"ENVIRONMENT=.* is unknown \(expected development, preprod, prod\)"):
        Settings.from_env({"ENVIRONMENT": value})


def test_settings_follow_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("QFDMO_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    assert settings().data_dir == tmp_path and settings() is settings()
    monkeypatch.setenv("ENVIRONMENT", "preprod")
    assert settings().environment is Environment.PREPROD


def _case_words(script: Path, subject: str) -> set[str]:
    """The words a shell `case "<subject>" in` accepts without complaint (branches that do not fail)."""
    text = script.read_text()
    block = text[text.index(f'case "{subject}" in') : text.index("esac", text.index(f'case "{subject}" in'))]
    words: set[str] = set()
    for patterns, body in re.findall(r"^\s*([a-z |\"]+)\)(.*?);;", block, flags=re.M | re.S):
        if "exit 2" in body or "problems+=" in body:
            continue
        words.update(p.strip().strip('"') for p in patterns.split("|"))
    return words


def test_one_environment_vocabulary_everywhere():
    """Shell scripts cannot import qfdmo.settings: they must accept exactly its words."""
    # sync_dags.sh: unset/empty means development (the `:-development` default), the rest syncs.
    assert _case_words(REPO / "sync_dags.sh", "${ENVIRONMENT:-development}") == WORDS
    assert "${ENVIRONMENT:-development}" in (REPO / "sync_dags.sh").read_text()
    # The images' entrypoints: the same words; unset is refused there (an app must say what it is).
    assert _case_words(REPO / "docker" / "airflow-common.sh", "$environment") == WORDS
    common = (REPO / "docker" / "airflow-common.sh").read_text()
    protected = re.search(r'QFDMO_PROTECTED_ENVIRONMENTS="([^"]*)"', common)
    assert protected and set(protected.group(1).split()) == {e.value for e in Environment if e.syncs_dags_from_s3}
    # The download DAG (self-contained: it must run in a DAG folder holding nothing else).
    download = (REPO / "dags" / "download_dags.py").read_text()
    development = re.search(r"DEVELOPMENT_ENVIRONMENTS = \(([^)]*)\)", download)
    synced = re.search(r"SYNCED_ENVIRONMENTS = \(([^)]*)\)", download)
    assert development and synced
    assert set(re.findall(r'"([^"]*)"', development.group(1))) == {"", Environment.DEVELOPMENT.value}
    assert set(re.findall(r'"([^"]*)"', synced.group(1))) == {e.value for e in Environment if e.syncs_dags_from_s3}
    # The local stack runs as development unless told otherwise.
    devstack = (REPO / "devstack" / "config.py").read_text()
    assert '"ENVIRONMENT": os.environ.get("ENVIRONMENT", "development")' in devstack
    assert Environment.parse(None) is Environment.parse("") is Environment.DEVELOPMENT
