"""A private PostgreSQL 15 + PostGIS cluster: provisioned from Debian's packages, run as a child."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from devstack.processes import ProcessGroup, StackError, apt_install, as_user, wait_until

PG_BIN = Path(os.environ.get("QFDMO_PG_BIN", "/usr/lib/postgresql/15/bin"))
POSTGIS_CONTROL = Path("/usr/share/postgresql/15/extension/postgis.control")
APT_PACKAGES = ["postgresql-15", "postgresql-15-postgis-3", "postgresql-15-postgis-3-scripts"]


def missing_packages() -> list[str]:
    missing = []
    if not (PG_BIN / "postgres").exists():
        missing.append("postgresql-15")
    if not POSTGIS_CONTROL.exists():
        missing += ["postgresql-15-postgis-3", "postgresql-15-postgis-3-scripts"]
    return missing


def provision() -> None:
    """Install PostgreSQL 15 + PostGIS with apt-get when missing (root only), else say what to do."""
    missing = missing_packages()
    if missing:
        apt_install(APT_PACKAGES, f"PostgreSQL 15 + PostGIS are ({', '.join(missing)})")


def server_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as `postgres` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as error:
        raise StackError("Running as root but there is no `postgres` user (install postgresql-15).") from error
    return "postgres"


class PostgresServer:
    def __init__(self, data_dir: Path, port: int, ephemeral: bool = False) -> None:
        self.data_dir = data_dir
        self.port = port
        self.ephemeral = ephemeral
        self.user = server_user()

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _chown(self, path: Path) -> None:
        if self.user:
            shutil.chown(path, self.user, self.user)

    def _make_reachable(self) -> None:
        """The server's user must be able to traverse every parent folder of the data dir."""
        if not self.user:
            return
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._make_reachable()
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        result = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"],
            capture_output=True, text=True, **as_user(self.user),
        )
        if result.returncode != 0:
            raise StackError(f"initdb failed:\n{result.stdout[-1500:]}{result.stderr[-1500:]}")

    def start(self, group: ProcessGroup) -> None:
        self.init()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.data_dir),
            "max_connections": "100",
            "shared_buffers": "128MB",
            "work_mem": "32MB",
            "maintenance_work_mem": "256MB",
            "max_wal_size": "2GB",
        }
        if self.ephemeral:
            # Throwaway clusters: durability buys nothing, speed does.
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        args = [str(PG_BIN / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        # The server's log files must be writable by the server's user.
        group.logs_dir.mkdir(parents=True, exist_ok=True)
        log_file = group.logs_dir / "postgres.log"
        log_file.touch()
        self._chown(log_file)
        group.start("postgres", args, user=self.user)
        wait_until(self.ready, f"PostgreSQL on port {self.port}", timeout=30, group=group, interval=0.2)

    def ready(self) -> bool:
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            capture_output=True,
        )
        return result.returncode == 0

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", self.dsn(dbname), "-c", sql],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"psql failed on {dbname}: {result.stderr.strip()}")
        return result.stdout.strip()

    def create_database(self, name: str, postgis: bool = False, template: str | None = None) -> None:
        """Creates `name` unless it exists: empty (with PostGIS if asked), or a copy of `template`
        (see `make_template`)."""
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        if postgis and not template:
            self.psql("CREATE EXTENSION IF NOT EXISTS postgis", dbname=name)

    def make_template(self, name: str) -> None:
        """Marks `name` as a template that takes no connection: copying a database fails while
        anyone (autovacuum included) is connected to it."""
        self.psql(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
