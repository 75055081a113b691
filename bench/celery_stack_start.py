"""Start-up of the Celery test stack (`celery_stack`: PostgreSQL, S3, Redis, Airflow, two workers),
twice in one run: `airflow db migrate` overlapped with the carte schema and S3 (devstack/stack.py)
vs run after them. Prints both wall times, the stack's phase timings and their ratio (a ratio:
the machine is shared, absolute times are noisy).

    .venv/bin/python bench/celery_stack_start.py
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.config import StackConfig
from devstack.stack import Stack


class MigrateAfterStorage(Stack):
    """The start as it was: `airflow db migrate` once PostgreSQL, the carte schema and S3 are up."""

    def _start_storage(self) -> None:
        self.with_airflow = False  # no early migration
        try:
            super()._start_storage()
        finally:
            self.with_airflow = True


def timed_start(kind: type[Stack]) -> float:
    config = StackConfig.throwaway("qfdmo-bench-celery-", executor="celery")
    stack = kind(config)
    started = time.monotonic()
    try:
        stack.start()
        wall = time.monotonic() - started
        print(f"{kind.__name__:<20} {wall:6.1f} s  {stack.timings}", flush=True)
    finally:
        for child in reversed(stack.group.children[:]):
            stack.group.kill(child)
        stack.stop()
        shutil.rmtree(config.state_dir, ignore_errors=True)
    return wall


def main() -> None:
    overlapped = timed_start(Stack)
    after = timed_start(MigrateAfterStorage)
    print(f"overlapped / after = {overlapped / after:.2f}")


if __name__ == "__main__":
    main()
