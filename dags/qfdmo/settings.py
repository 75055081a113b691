"""The platform's settings from the environment: one typed, frozen model, parsed in one place.

Every variable the DAG code reads is parsed here (and nowhere else in dags/), into `Settings`,
with errors that name the variable. `settings()` parses the environment once per distinct set of
values: a task process pays for it once, and tests that change a variable see the change.

ENVIRONMENT's vocabulary is `Environment`: development (or unset), preprod, prod. The shell
scripts that cannot import Python (sync_dags.sh, docker/airflow-common.sh) and the local stack
(devstack/config.py) use the same words; dags_unit_tests/test_settings.py checks that they agree.
dags/download_dags.py must run in a DAG folder that holds nothing else (the image's copy is never
replaced by a sync): it keeps its own copy of the words, checked by the same test.

(The DAG sync, scripts/dags_delivery/, has its own settings: it runs outside the DAG folder and
must not import code it publishes.)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)

NORMALISE_PROCESSES = "QFDMO_NORMALISE_PROCESSES"
DEFAULT_DATA_DIR = Path("/opt/airflow/data")  # the containers' volume; the local stack sets QFDMO_DATA_DIR
RUN_DATA_BUCKET = "QFDMO_RUN_DATA_BUCKET"
FAILED_RUN_RETENTION_DAYS = "QFDMO_FAILED_RUN_RETENTION_DAYS"
DEFAULT_RUN_DATA_BUCKET = "qfdmo-airflow-runs"
DEFAULT_FAILED_RUN_RETENTION_DAYS = 7
_NAMES = ("ENVIRONMENT", "QFDMO_DATA_DIR", NORMALISE_PROCESSES, "CARTE_DB_DSN", RUN_DATA_BUCKET,
          FAILED_RUN_RETENTION_DAYS)


class SettingsError(ValueError):
    """A variable of the environment has a value the platform cannot use (the message names it)."""


class Environment(Enum):
    DEVELOPMENT = "development"
    PREPROD = "preprod"
    PROD = "prod"

    @classmethod
    def parse(cls, value: str | None) -> Environment:
        """Exactly one of the words (unset or empty = development): a typo must not pass for one."""
        if not value:
            return cls.DEVELOPMENT
        try:
            return cls(value)
        except ValueError:
            expected = ", ".join(e.value for e in cls)
            raise SettingsError(f"ENVIRONMENT={value!r} is unknown (expected {expected})") from None

    @property
    def syncs_dags_from_s3(self) -> bool:
        """preprod and prod get their DAGs from the bucket; development from the working tree."""
        return self is not Environment.DEVELOPMENT


@dataclass(frozen=True)
class Settings:
    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = DEFAULT_DATA_DIR
    normalise_processes: int | None = None  # None: as many as the CPUs available (see parallel_normalise)
    carte_db_dsn: str | None = None  # for `python -m qfdmo.carte_db`; the DAGs use their connection
    # Where the tasks of a source run hand each other its data: `bucket` or `bucket/prefix`.
    run_data_bucket: str = DEFAULT_RUN_DATA_BUCKET
    failed_run_retention_days: float = DEFAULT_FAILED_RUN_RETENTION_DAYS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            environment=Environment.parse(env.get("ENVIRONMENT")),
            data_dir=Path(env.get("QFDMO_DATA_DIR") or DEFAULT_DATA_DIR),
            normalise_processes=_processes(env.get(NORMALISE_PROCESSES, "").strip()),
            carte_db_dsn=env.get("CARTE_DB_DSN") or None,
            run_data_bucket=_bucket(env.get(RUN_DATA_BUCKET, "").strip()),
            failed_run_retention_days=_days(env.get(FAILED_RUN_RETENTION_DAYS, "").strip()),
        )


def _bucket(configured: str) -> str:
    value = configured.strip("/") or DEFAULT_RUN_DATA_BUCKET
    if value.startswith("s3://") or not value.split("/")[0]:
        raise SettingsError(f"{RUN_DATA_BUCKET}={configured!r}: expected `bucket` or `bucket/prefix`")
    return value


def _days(configured: str) -> float:
    # A wrong value must not quietly delete a failed run's data sooner than asked: refused.
    if not configured:
        return DEFAULT_FAILED_RUN_RETENTION_DAYS
    try:
        days = float(configured)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise SettingsError(f"{FAILED_RUN_RETENTION_DAYS}={configured!r} is not a number of days >= 0")
    return days


def _processes(configured: str) -> int | None:
    if not configured:
        return None
    try:
        return max(1, int(configured))
    except ValueError:
        # Not fatal: the CPU count is a sound value, and a run should not fail on a tuning knob.
        log.warning("%s=%r is not a number: using the CPU count", NORMALISE_PROCESSES, configured)
        return None


def settings() -> Settings:
    """The settings of this process's environment."""
    return _parsed(tuple(os.environ.get(name) for name in _NAMES))


@functools.lru_cache(maxsize=4)
def _parsed(values: tuple[str | None, ...]) -> Settings:
    return Settings.from_env({name: value for name, value in zip(_NAMES, values, strict=True) if value is not None})
