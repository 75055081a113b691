"""Task-instance hostnames for the local stack's Celery workers (AIRFLOW__CORE__HOSTNAME_CALLABLE).

Both workers run on this machine, so Airflow's default (the machine's FQDN) would give them the same
name; each worker is given QFDMO_WORKER_NAME and its tasks show `<worker>.<machine>` in the UI."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    worker = os.environ.get("QFDMO_WORKER_NAME")
    machine = socket.getfqdn()
    return f"{worker}.{machine}" if worker else machine
