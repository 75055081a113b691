"""The CeleryExecutor of the platform: tasks wait in the scheduler while the broker is unreachable.

Airflow's CeleryExecutor publishes each queued task to the broker; when the broker (Valkey/Redis)
does not answer, the publish fails, the executor logs "Error sending Celery workload" with a
traceback and reports the task failed: it spends one of its retries, or fails the run. This
subclass asks the broker first; while it does not answer, the tasks stay in the executor's queue
(state `queued` in the UI), nothing is sent and nothing fails, and the scheduler log says so in
one line — when the outage starts, every OUTAGE_REMINDER seconds while it lasts, when it ends.

Select it with AIRFLOW__CORE__EXECUTOR=qfdmo.airflow.celery_executor.BrokerAwareCeleryExecutor on the
scheduler and the workers (dags/ on PYTHONPATH, as in the images). A broker lost between the check
and the publish still takes the stock path (the task fails once and retries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.celery.executors.celery_executor import CeleryExecutor

OUTAGE_REMINDER = 60.0  # seconds between two "still unreachable" lines
CONNECT_TIMEOUT = 2.0  # seconds: the scheduler loop must not hang on an unreachable host
BROKER_DOWN = "Celery broker unreachable"
BROKER_BACK = "Celery broker reachable again"


class BrokerAwareCeleryExecutor(CeleryExecutor):
    """CeleryExecutor that holds tasks back, with a clear log line, while the broker is down."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker_down_since: float | None = None
        self._last_outage_line = 0.0

    def _send_workloads(self, workload_tuples_to_send: Sequence[Any]) -> None:
        if workload_tuples_to_send:
            error = self._broker_error()
            if error is not None:
                self._outage(error, len(workload_tuples_to_send))
                return  # they stay in the queue: sent at the next loop that finds the broker
            self._recovered(len(workload_tuples_to_send))
        super()._send_workloads(workload_tuples_to_send)

    def _broker_url(self) -> str:
        with self.celery_app.connection_for_write() as connection:
            return connection.as_uri()  # the password masked

    def _broker_error(self) -> str | None:
        """None when the broker accepts a connection, else what went wrong (one line)."""
        try:
            with self.celery_app.connection_for_write(connect_timeout=CONNECT_TIMEOUT) as connection:
                connection.ensure_connection(max_retries=0)  # one attempt, no wait
        except Exception as error:  # kombu raises OperationalError, the transports their own errors
            return f"{type(error).__name__}: {error}".splitlines()[0]
        return None

    def _outage(self, error: str, waiting: int) -> None:
        now = time.monotonic()
        if self._broker_down_since is None:
            self._broker_down_since = now
        elif now - self._last_outage_line < OUTAGE_REMINDER:
            return
        self._last_outage_line = now
        self.log.error(
            "%s (%s, for %.0f s: %s): %d task(s) wait in the scheduler, state queued, and are sent as "
            "soon as it answers; nothing fails meanwhile (until [scheduler] task_queued_timeout). "
            "Check the broker service.",
            BROKER_DOWN, self._broker_url(), now - self._broker_down_since, error, waiting,
        )

    def _recovered(self, waiting: int) -> None:
        if self._broker_down_since is None:
            return
        self.log.warning("%s (%s) after %.0f s: sending %d waiting task(s).", BROKER_BACK, self._broker_url(),
                         time.monotonic() - self._broker_down_since, waiting)
        self._broker_down_since = None

