"""Benchmark: sync_dags.sh against `aws s3 sync --delete`, same bucket, same run, 1,000 files.

Scenarios: first sync into an empty folder, no-op sync, one-file change. Each is timed 3 times
per tool (median kept) on a private moto S3 server; prints the ratios ours/aws.
Targets: no-op and one-change <= 1.0, first sync <= 1.5. Exit code 1 when a target is missed.

    .venv/bin/python bench/dags_sync.py [--files 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
TARGETS = {"first sync": 1.5, "no-op sync": 1.0, "one-file change": 1.0}
BUCKET, PREFIX = "bench-dags", "dags/"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dags-sync-"))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(f"{endpoint}/moto-api/")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
            "S3_ENDPOINT_URL": endpoint,
            "DAGS_BUCKET": f"{BUCKET}/{PREFIX}",
            "DAGS_SOURCE_DIR": str(work / "source"),
            "ENVIRONMENT": "preprod",
            "CELLAR_ADDON_HOST": endpoint,
            "CELLAR_ADDON_KEY_ID": "bench",
            "CELLAR_ADDON_KEY_SECRET": "bench-secret",
            "CELLAR_ADDON_BUCKET": f"{BUCKET}/{PREFIX}",
            "DAGS_SYNC_PYTHON": str(BIN / "python"),
        }
        aws = [str(BIN / "aws"), "--endpoint-url", endpoint, "s3"]
        subprocess.run([*aws, "mb", f"s3://{BUCKET}"], env=env, check=True, capture_output=True)

        # A DAG folder's shape: a few packages, small Python files of varied sizes.
        for i in range(args.files):
            path = work / "source" / f"pkg_{i % 20}" / f"module_{i}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f'"""Module {i}."""\n' + "VALUE = 1  # padding\n" * (i % 50))

        def deploy() -> None:
            subprocess.run([str(REPO / "scripts" / "deploy_dags.sh")], env=env, check=True, capture_output=True)

        def ours(folder: Path) -> Callable[[], None]:
            def run() -> None:
                result = subprocess.run(
                    [str(REPO / "sync_dags.sh")],
                    env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)},
                    capture_output=True,
                    text=True,
                )
                if result.returncode != 0:
                    raise SystemExit(f"sync_dags.sh failed: {result.stderr}")

            return run

        def theirs(folder: Path) -> Callable[[], None]:
            def run() -> None:
                subprocess.run(
                    [*aws, "sync", "--delete", "--only-show-errors", f"s3://{BUCKET}/{PREFIX}", str(folder)],
                    env=env,
                    check=True,
                )

            return run

        deploy()
        times: dict[str, dict[str, list[float]]] = {name: {"ours": [], "aws": []} for name in TARGETS}
        ours_dir, aws_dir = work / "ours" / "dags", work / "aws" / "dags"
        for _ in range(args.rounds):
            for folder in (ours_dir, aws_dir):
                shutil.rmtree(folder.parent, ignore_errors=True)
                folder.mkdir(parents=True)
            times["first sync"]["ours"].append(timed(ours(ours_dir)))
            times["first sync"]["aws"].append(timed(theirs(aws_dir)))
        for _ in range(args.rounds):
            times["no-op sync"]["ours"].append(timed(ours(ours_dir)))
            times["no-op sync"]["aws"].append(timed(theirs(aws_dir)))
        for round_number in range(args.rounds):
            changed = work / "source" / "pkg_3" / "module_3.py"
            changed.write_text(changed.read_text() + f"CHANGE = {round_number}\n")
            deploy()
            times["one-file change"]["ours"].append(timed(ours(ours_dir)))
            times["one-file change"]["aws"].append(timed(theirs(aws_dir)))
        expected = (work / "source" / "pkg_3" / "module_3.py").read_text()
        assert (ours_dir / "pkg_3" / "module_3.py").read_text() == expected, "our sync missed the change"
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    missed = []
    print(f"dags sync benchmark: {args.files} files, median of {args.rounds} runs, moto S3 on loopback")
    print(f"{'scenario':<16} {'sync_dags.sh':>12} {'aws s3 sync':>12} {'ratio':>7} {'target':>7}")
    for name, target in TARGETS.items():
        mine, aws_time = statistics.median(times[name]["ours"]), statistics.median(times[name]["aws"])
        ratio = mine / aws_time
        verdict = "ok" if ratio <= target else "MISSED"
        if ratio > target:
            missed.append(name)
        print(f"{name:<16} {mine:>11.2f}s {aws_time:>11.2f}s {ratio:>7.2f} {target:>6.1f}x {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
