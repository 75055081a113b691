"""Platform benchmark: DAG parse times, stack start-up time and idle memory.

    .venv/bin/python bench/local_stack.py [--idle-seconds 20]

Budgets (issue 2): 0.5 s per DAG file and 3 s for the folder; stack healthy within 60 s with a warm
virtualenv; idle stack under 2 GB of RSS in total. Exits 1 when a budget is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devstack.config import REPO_ROOT, Ports, StackConfig
from devstack.processes import process_tree, processes_in_group
from devstack.stack import Stack

FILE_BUDGET_S = 0.5
FOLDER_BUDGET_S = 3.0
START_BUDGET_S = 60.0
IDLE_RSS_BUDGET_MB = 2048


def parse_times() -> bool:
    result = subprocess.run([sys.executable, "-m", "devstack.dag_check", str(REPO_ROOT / "dags")],
                            capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    report = json.loads(result.stdout.splitlines()[-1])
    ok = True
    print("DAG parse times (fresh interpreter, Airflow already imported):")
    for name, seconds in sorted(report["files"].items()):
        verdict = "ok" if seconds <= FILE_BUDGET_S else "OVER BUDGET"
        ok &= seconds <= FILE_BUDGET_S
        print(f"  {name:<40} {seconds:6.3f} s  (budget {FILE_BUDGET_S} s) {verdict}")
    folder = report["folder_s"]
    ok &= folder <= FOLDER_BUDGET_S and not report["import_errors"]
    print(f"  {'whole folder':<40} {folder:6.3f} s  (budget {FOLDER_BUDGET_S} s), "
          f"{len(report['dags'])} DAGs, {len(report['import_errors'])} import errors")
    print(f"  (importing Airflow itself: {report['airflow_import_s']:.3f} s, paid once per process)")
    return ok


def memory_of(pgids: list[int]) -> tuple[int, float, float]:
    """Number of processes, sum of RSS and sum of PSS (MB) of the stack's children and descendants."""
    rss = pss = 0
    pids = sorted(set(process_tree(pgids)) | {pid for pgid in pgids for pid in processes_in_group(pgid)})
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return len(pids), rss / 1024, pss / 1024


def stack_figures(idle_seconds: float) -> bool:
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as state:
        config = StackConfig(state_dir=Path(state), ports=Ports.free())
        for label in ("first start (empty state: initdb, migrations)", "second start (existing state)"):
            stack = Stack(config)
            started = time.monotonic()
            stack.start()
            elapsed = time.monotonic() - started
            ok &= elapsed <= START_BUDGET_S
            print(f"Stack {label}: healthy in {elapsed:.1f} s (budget {START_BUDGET_S:.0f} s) {stack.timings}")
            time.sleep(idle_seconds)
            count, rss, pss = memory_of(stack.group.pgids())
            ok &= rss <= IDLE_RSS_BUDGET_MB
            print(f"  idle after {idle_seconds:.0f} s: {count} processes, RSS sum {rss:.0f} MB "
                  f"(budget {IDLE_RSS_BUDGET_MB} MB), PSS sum {pss:.0f} MB")
            pgids = stack.group.pgids()
            started = time.monotonic()
            stack.stop()
            left = [pid for pgid in pgids for pid in processes_in_group(pgid)]
            ok &= not left
            print(f"  stopped in {time.monotonic() - started:.1f} s, processes left: {len(left)}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-seconds", type=float, default=20)
    options = parser.parse_args()
    ok = parse_times()
    ok &= stack_figures(options.idle_seconds)
    print("platform benchmark:", "all budgets met" if ok else "BUDGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
