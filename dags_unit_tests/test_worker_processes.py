"""map_in_processes: results in job order from fresh interpreters; a job's error or a dead worker
fails the call clearly and stops the other workers; a caller's threads and locks are not inherited."""

from __future__ import annotations

import os
import threading

import pytest
from qfdmo.pipeline.worker_processes import WorkerProcessError, map_in_processes


def times(factor: int, value: int) -> tuple[int, int]:
    print("noise on stdout")  # must not reach the answers
    return value * factor, os.getpid()


def fails_on(bad: int, value: int) -> int:
    if value == bad:
        raise ValueError(f"bad value {value}")
    return value


def dies_on(bad: int, value: int) -> int:
    if value == bad:
        os._exit(3)
    return value


def test_results_come_in_job_order_from_several_processes():
    results = list(map_in_processes(times, (10,), [(v,) for v in range(7)], processes=3))
    assert [value for value, _ in results] == [v * 10 for v in range(7)]
    assert len({pid for _, pid in results} - {os.getpid()}) == 3


def test_a_job_error_is_raised_with_the_worker_traceback():
    with pytest.raises(ValueError, match="bad value 4") as raised:
        list(map_in_processes(fails_on, (4,), [(v,) for v in range(6)], processes=2))
    assert any("in worker process" in note and "fails_on" in note for note in raised.value.__notes__)


def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(WorkerProcessError, match="exited \\(code 3\\)"):
        list(map_in_processes(dies_on, (2,), [(v,) for v in range(6)], processes=2))


def test_a_lock_held_by_another_thread_does_not_reach_the_workers():
    # What made the "fork" start method hang the suite: a child copied while another thread holds a lock.
    held, release = threading.Event(), threading.Event()
    lock = threading.Lock()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    try:
        assert [v for v, _ in map_in_processes(times, (1,), [(1,), (2,)], processes=2)] == [1, 2]
    finally:
        release.set()
        thread.join()


def test_a_task_in_a_celery_pool_process_may_start_workers():
    # Celery's prefork pool marks its processes daemonic (multiprocessing refuses them children) and
    # billiard puts its own authkey type there (multiprocessing refuses to pickle it): neither matters.
    import multiprocessing

    import billiard.process

    config = multiprocessing.current_process()._config
    saved = dict(config)
    config["daemon"] = True
    config["authkey"] = billiard.process.AuthenticationString(bytes(config["authkey"]))
    try:
        assert [v for v, _ in map_in_processes(times, (2,), [(1,), (2,)], processes=2)] == [2, 4]
    finally:
        config.clear()
        config.update(saved)
