"""Run a function over a list of jobs in fresh Python interpreters; results come back in job order.

Why not multiprocessing, which the parallel normalise used first:
- "fork" copies a process that runs threads (a task process's S3 transfers, the supervisor's, a test
  runner's): a child forked while another thread holds a lock can wait on it forever. The full test
  suite hung exactly there, twice.
- "spawn" and "forkserver" start each child by re-running the caller's `__main__`: in an Airflow task
  that is the `airflow` CLI, whose import fails on purpose there (a task process gets an unusable
  metadata-database URL). And under Celery, billiard replaces multiprocessing's current process with
  its own, whose authkey multiprocessing refuses to pickle to a fork server.
A worker here is `python -c` importing this module, with the caller's `sys.path`: it inherits no
thread, no lock and no `__main__`, and multiprocessing's rules on daemonic parents do not apply.

Protocol: the parent writes one pickle to a worker's stdin — (function, common arguments, its jobs) —
and closes it; the worker answers one pickle per job on its stdout, ("ok", result) or ("error",
exception, traceback text), in the order of its jobs. Worker k of n takes jobs k, k+n, k+2n…, so
the parent reads the results in job order without any scheduling of its own. The worker's own stdout
goes to stderr (the task log), never into the result stream.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from collections.abc import Callable, Generator, Sequence
from typing import Any

_SERVE = "from qfdmo.pipeline.worker_processes import _serve; _serve()"


class WorkerProcessError(RuntimeError):
    """A worker process exited before it answered (killed, out of memory, interpreter crash)."""


def map_in_processes(
    function: Callable[..., Any], common: tuple[Any, ...], jobs: Sequence[tuple[Any, ...]], processes: int
) -> Generator[Any, None, None]:
    """`function(*common, *job)` for each job, computed by `processes` worker processes; yields the
    results in job order. A job's exception is raised here (its traceback in the worker as a note);
    the other workers are then stopped. `function` must be importable (module level)."""
    count = max(1, min(processes, len(jobs)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            worker = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
            workers.append(worker)
            assert worker.stdin is not None
            # Each worker's jobs are sent whole before any result is read: a worker blocked writing a
            # result while the parent writes its jobs would otherwise deadlock both.
            with worker.stdin:
                pickle.dump((function, common, list(jobs[index::count])), worker.stdin, pickle.HIGHEST_PROTOCOL)
        for position in range(len(jobs)):
            yield _answer(workers[position % count])
        for worker in workers:
            worker.wait()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


def _answer(worker: subprocess.Popen[bytes]) -> Any:
    assert worker.stdout is not None
    try:
        kind, *payload = pickle.load(worker.stdout)
    except EOFError:
        raise WorkerProcessError(
            f"worker process {worker.pid} exited (code {worker.wait()}) before it answered"
        ) from None
    if kind == "ok":
        return payload[0]
    error, remote_traceback = payload
    error.add_note(f"in worker process {worker.pid}:\n{remote_traceback}")
    raise error


def _serve() -> None:
    """A worker's main: its jobs from stdin, one answer per job on the original stdout."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a print in a job goes to the log, not the answers
    function, common, jobs = pickle.load(sys.stdin.buffer)
    for job in jobs:
        try:
            answer: tuple[Any, ...] = ("ok", function(*common, *job))
        except Exception as exc:
            answer = ("error", exc, traceback.format_exc())
        try:
            data = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an answer that does not pickle is sent as an error with its text
            text = answer[2] if answer[0] == "error" else traceback.format_exc()
            answer = ("error", RuntimeError(f"{type(exc).__name__}: {exc}"), text)
            data = pickle.dumps(answer)
        answers.write(data)
        answers.flush()
        if answer[0] == "error":
            break
    answers.close()
