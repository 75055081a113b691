"""Where the local stack lives, which ports it uses, and the environment Airflow runs with.

One function builds the environment, so `make run`, `bin/airflow` and the test fixtures always agree.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack.processes import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = REPO_ROOT / ".venv" / "bin"
DEFAULT_STATE_DIR = REPO_ROOT / ".local"

LOGS_BUCKET = "qfdmo-airflow-logs"
DAGS_BUCKET = "qfdmo-airflow-dags"
OPENDATA_BUCKET = "qfdmo-opendata"  # export_opendata publishes there (connection s3data)
RUNS_BUCKET = "qfdmo-airflow-runs"  # what the tasks of a source run hand each other (connection s3runs)
BUCKETS = (LOGS_BUCKET, DAGS_BUCKET, OPENDATA_BUCKET, RUNS_BUCKET)

# Development credentials only: printed by `make run`, refused by the images in preprod/prod.
UI_USER = "airflow"
UI_PASSWORD = "airflow"
# LocalExecutor runs every task on the scheduler's machine (the default everywhere); CeleryExecutor
# (QFDMO_EXECUTOR=celery) adds a Redis broker and CELERY_WORKERS workers to the local stack, with the
# platform's subclass that holds tasks back while the broker is down (qfdmo/airflow/celery_executor.py).
CELERY_EXECUTOR = "qfdmo.airflow.celery_executor.BrokerAwareCeleryExecutor"
EXECUTORS = {"local": "LocalExecutor", "celery": CELERY_EXECUTOR}
CELERY_WORKERS = 2

# moto accepts any key pair; these are placeholders, not secrets.
S3_DEV_KEY_ID = "qfdmo-dev"
S3_DEV_KEY_SECRET = "qfdmo-dev-secret"


@dataclass
class Ports:
    """Ports of the stack's services, all on 127.0.0.1. Overridable through QFDMO_*_PORT."""

    postgres: int = 54320
    s3: int = 9000
    api: int = 8080
    worker_logs: int = 8793
    trigger_logs: int = 8794
    broker: int = 6379  # only with QFDMO_EXECUTOR=celery

    @classmethod
    def from_env(cls) -> Ports:
        ports = cls()
        for name in asdict(ports):
            value = os.environ.get(f"QFDMO_{name.upper()}_PORT")
            if value:
                setattr(ports, name, int(value))
        return ports

    def named(self) -> dict[str, int]:
        return {f"QFDMO_{name.upper()}_PORT": port for name, port in asdict(self).items()}

    @classmethod
    def free(cls) -> Ports:
        """A free port for every service: a throwaway stack beside any other."""
        return cls(**{name: free_port() for name in asdict(cls())})


@dataclass
class StackConfig:
    state_dir: Path
    ports: Ports = field(default_factory=Ports)
    dags_folder: Path = REPO_ROOT / "dags"
    # Throwaway stacks (tests, benchmarks) trade durability for speed.
    ephemeral: bool = False
    executor: str = "local"  # a key of EXECUTORS

    @classmethod
    def throwaway(cls, prefix: str, executor: str = "local") -> StackConfig:
        """An ephemeral stack (tests, benchmarks) in a new folder of the system's temporary directory,
        on free ports, reading its DAGs from a copy of dags/ (a test may add files to it)."""
        # Not under pytest's basetemp: another pytest session of the same user resets the permissions
        # of /tmp/pytest-of-<user> to 0700, which the server's own user (postgres) then cannot traverse.
        state_dir = Path(tempfile.mkdtemp(prefix=prefix))
        dags_folder = state_dir / "dags"
        shutil.copytree(REPO_ROOT / "dags", dags_folder, ignore=shutil.ignore_patterns("__pycache__", ".env"))
        return cls(state_dir=state_dir, ports=Ports.free(), dags_folder=dags_folder, ephemeral=True,
                   executor=executor)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"QFDMO_EXECUTOR={self.executor!r}: expected one of {', '.join(EXECUTORS)}")

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    def used_ports(self) -> dict[str, int]:
        """The QFDMO_*_PORT this stack listens on (the broker's only with Celery)."""
        ports = self.ports.named()
        if not self.celery:
            ports.pop("QFDMO_BROKER_PORT")
        return ports

    @property
    def broker_dir(self) -> Path:
        return self.state_dir / "broker"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports.broker}/0"

    @property
    def pg_dir(self) -> Path:
        return self.state_dir / "postgres"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def worker_dir(self, name: str) -> Path:
        """A Celery worker's own folder, as if it were another machine: its data and scratch."""
        return self.state_dir / "machines" / name

    def worker_env(self, name: str) -> dict[str, str]:
        """What a Celery worker adds to airflow_env(): its name and a disk of its own."""
        machine = self.worker_dir(name)
        return {
            "QFDMO_WORKER_NAME": name,
            "QFDMO_DATA_DIR": str(machine / "data"),
            "TMPDIR": str(machine / "tmp"),
            # Task-instance hostnames `<worker>.<machine>` (devstack.worker_identity, on PYTHONPATH).
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.worker_identity.hostname",
        }

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "stack.json"

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/{dbname}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "ports": asdict(self.ports),
            "dags_folder": str(self.dags_folder),
            "ephemeral": self.ephemeral,
            "executor": self.executor,
        }
        self.config_file.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, state_dir: Path | None = None) -> StackConfig:
        """The stack of QFDMO_STACK_DIR (or .local/): as saved when it started, else from the env."""
        state_dir = Path(state_dir or os.environ.get("QFDMO_STACK_DIR") or DEFAULT_STATE_DIR)
        config = cls(state_dir=state_dir.resolve(), ports=Ports.from_env(),
                     executor=os.environ.get("QFDMO_EXECUTOR") or "local")
        if config.config_file.exists():
            saved = json.loads(config.config_file.read_text())
            config.ports = Ports(**{**asdict(Ports()), **saved["ports"]})
            config.dags_folder = Path(saved["dags_folder"])
            config.ephemeral = saved.get("ephemeral", False)
            config.executor = saved.get("executor", "local")
        return config

    def secret(self, name: str, fernet: bool = False) -> str:
        """A per-stack random secret, generated once and kept in the (git-ignored) state dir."""
        path = self.airflow_home / f".{name}"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            value = base64.urlsafe_b64encode(os.urandom(32)).decode() if fernet else secrets.token_urlsafe(32)
            path.write_text(value)
            path.chmod(0o600)
        return path.read_text().strip()

    def airflow_env(self) -> dict[str, str]:
        """The environment of every Airflow process of this stack (on top of os.environ)."""
        home = self.airflow_home
        passwords = home / "simple_auth_manager_passwords.json"
        if not passwords.exists():
            home.mkdir(parents=True, exist_ok=True)
            passwords.write_text(json.dumps({UI_USER: UI_PASSWORD}))
        s3logs = {
            "conn_type": "aws",
            "login": S3_DEV_KEY_ID,
            "password": S3_DEV_KEY_SECRET,
            "extra": {
                "endpoint_url": self.s3_endpoint_url,
                "region_name": "us-east-1",
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
        env = {
            # Airflow launches its components as `airflow` found on PATH.
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(VENV_BIN.parent),
            "QFDMO_STACK_DIR": str(self.state_dir),
            "ENVIRONMENT": os.environ.get("ENVIRONMENT", "development"),
            "QFDMO_DATA_DIR": str(self.data_dir),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                f"postgresql+psycopg2://postgres@127.0.0.1:{self.ports.postgres}/airflow"
            ),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__FERNET_KEY": self.secret("fernet_key", fernet=True),
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self.secret("api_secret_key"),
            "AIRFLOW__API__BASE_URL": self.api_url,
            # Idle memory: a few executor slots, one API worker, one parsing process.
            "AIRFLOW__CORE__PARALLELISM": os.environ.get("QFDMO_PARALLELISM", "3"),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # A DAG file change shows up within ~30 s instead of 5 min.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports.trigger_logs),
            # Task logs go to S3, as in preprod/prod.
            "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
            "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{LOGS_BUCKET}/logs",
            "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": "s3logs",
            "AIRFLOW__LOGGING__ENCRYPT_S3_LOGS": "False",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "AIRFLOW_CONN_S3LOGS": json.dumps(s3logs),
            "AIRFLOW_CONN_S3DATA": json.dumps(s3logs),  # same local S3, the open-data bucket
            "AIRFLOW_CONN_S3RUNS": json.dumps(s3logs),  # same local S3, the source runs' data
            "QFDMO_RUN_DATA_BUCKET": RUNS_BUCKET,
            "AIRFLOW_CONN_QFDMO_DJANGO_DB": self.dsn("qfdmo"),
            # The download DAG mirrors this bucket when ENVIRONMENT is not development.
            "CELLAR_ADDON_HOST": self.s3_endpoint_url,
            "CELLAR_ADDON_KEY_ID": S3_DEV_KEY_ID,
            "CELLAR_ADDON_KEY_SECRET": S3_DEV_KEY_SECRET,
            "CELLAR_ADDON_BUCKET": DAGS_BUCKET,
            "SYNC_DAGS_SCRIPT": str(REPO_ROOT / "sync_dags.sh"),
        }
        if self.celery:
            # The executor class from the DAG folder (as in the images), devstack for the workers' names.
            env["PYTHONPATH"] = os.pathsep.join((str(self.dags_folder), str(REPO_ROOT)))
            env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
            # Results in the metadata database: no second store to run.
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = (
                f"db+postgresql://postgres@127.0.0.1:{self.ports.postgres}/airflow")
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = os.environ.get("QFDMO_WORKER_CONCURRENCY", "2")
            if self.ephemeral:
                # Test stacks: a killed worker's task is declared lost (then retried) after 40 s
                # without heartbeat, instead of 5 min (README « Passer à l'échelle »); not much less:
                # on a saturated machine a live task's heartbeat can lag that long.
                env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = "40"
                env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] = "2"
                # Each call of a task to the execution API: 30 s instead of 5 (x 5 tries), for the
                # same reason.
                env["AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT"] = "30"
        if self.ephemeral:
            # Test stacks: new DAG files are picked up within seconds. A file parsed again only when
            # it changes (the processor's default order, modified_time, takes a changed file at once
            # whatever this interval). Re-parsing every file every 5 s cost each test stack's
            # dag-processor about a third of a core, with three stacks up at once in `make test`.
            env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
            env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = "3600"
            # The scheduler sleeps this long after a loop with nothing to do (default 1 s): a run's
            # skipped tasks are marked one loop at a time, and each task waits up to one loop to start.
            env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = "0.25"
        # Variables the caller chose to override (tests point the sync at their own bucket/folder).
        for name in filter(None, os.environ.get("QFDMO_OVERRIDE_ENV", "").split(",")):
            if name in os.environ:
                env[name] = os.environ[name]
        return env
