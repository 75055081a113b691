"""The Celery broker of the local stack (QFDMO_EXECUTOR=celery): a private Redis server on loopback,
from Debian's `redis-server` package (Valkey's protocol is the same), in memory only."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from devstack.processes import ProcessGroup, apt_install, wait_until

REDIS_SERVER = "redis-server"
APT_PACKAGE = "redis-server"


def provision() -> None:
    """Install redis-server with apt-get when missing (root only), else say what to do."""
    if not shutil.which(REDIS_SERVER):
        apt_install([APT_PACKAGE], f"The Celery broker ({APT_PACKAGE}) is")


class BrokerServer:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self, group: ProcessGroup) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # No persistence: queued task messages are re-sent by the scheduler after a restart.
        group.start("broker", [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port),
                               "--save", "", "--appendonly", "no", "--dir", str(self.data_dir)])
        wait_until(self.ready, f"the Celery broker (redis) on port {self.port}", timeout=30, group=group,
                   interval=0.1)

    def ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False
