"""Normalise a downloaded feed with several processes.

Normalising is pure Python (one core at ~30 µs a row) while the machine has more: the pages of
raw.jsonl are cut into contiguous parts, each normalised by a worker process into files of its
own, and the parent appends those files to the run's files in feed order as the parts complete.
The result is what one process would write, but for the `row_number` column of acteurs.tsv: a
worker cannot know how many rows the parts before its own hold, so part `i` numbers its rows from
`i << 32` (they still increase in feed order, which is all staging uses them for). The run report
gives true row numbers: the parent renumbers the examples once the parts' sizes are known.

Workers are fresh interpreters (`worker_processes`: why not multiprocessing); duplicates across
parts are counted on a stable digest of the identifiant_unique, the same in every interpreter.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from qfdmo.carte_db.staging_format import FILES
from qfdmo.feeds import iter_raw_rows, page_spans
from qfdmo.pipeline.worker_processes import map_in_processes
from qfdmo.settings import NORMALISE_PROCESSES, settings
from qfdmo.sources import NormalisationContext, NormalisationReport, SourceDeclaration
from qfdmo.sources import normalise as normalise_rows
from qfdmo.sources.normalisation import ReferenceCodesLike

PROCESSES_ENV = NORMALISE_PROCESSES
MAX_DEFAULT_PROCESSES = 4
# Parts per process: the last parts to finish keep every process busy until the end.
PARTS_PER_PROCESS = 4
PART_SHIFT = 32  # row numbers of part i start at i << 32 (a part holds far fewer than 2**32 rows)
# Below this size of raw feed, one process is done before the workers (fresh interpreters) would have
# started: they cost more than they save (README, `normalise`, gives the measured break-even).
PARALLEL_MIN_BYTES = 48 << 20


def default_processes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """`$QFDMO_NORMALISE_PROCESSES`, else the CPUs this process may use (at most 4): the CPUs it
    may run on, bounded by a container's CPU quota (each worker also costs ~125 MB)."""
    configured = settings().normalise_processes
    if configured is not None:
        return configured
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, min(MAX_DEFAULT_PROCESSES, cpus))


def processes_for(raw_path: Path) -> int:
    """`$QFDMO_NORMALISE_PROCESSES` when set; else one process for a feed smaller than
    PARALLEL_MIN_BYTES, `default_processes()` for a larger one."""
    if settings().normalise_processes is None and raw_path.stat().st_size < PARALLEL_MIN_BYTES:
        return 1
    return default_processes()


def cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), None if unlimited."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1 = root / "cpu"
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        return None if quota_us <= 0 else quota_us / int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def _parts(spans: list[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """`spans` (one per page) grouped into at most `count` contiguous byte ranges of similar size."""
    size = -(-len(spans) // count)
    return [(spans[i][0], spans[min(i + size, len(spans)) - 1][1]) for i in range(0, len(spans), size)]


def _normalise_part(
    declaration: SourceDeclaration,
    raw_path: Path,
    reference: ReferenceCodesLike,
    context: NormalisationContext,
    part_dir: Path,
    index: int,
    start: int,
    end: int,
) -> tuple[NormalisationReport, set[bytes]]:
    seen: set[bytes] = set()
    report = normalise_rows(
        declaration,
        iter_raw_rows(raw_path, start, end),
        reference,
        part_dir,
        context,
        first_row_number=(index << PART_SHIFT) + 1,
        seen=seen,
    )
    return report, seen


def normalise_feed(
    declaration: SourceDeclaration,
    raw_path: Path,
    reference: ReferenceCodesLike,
    run_dir: Path,
    context: NormalisationContext,
    processes: int | None = None,
) -> NormalisationReport:
    """Normalise the pages of `raw_path` into the run files of `run_dir` with `processes` workers
    (default: `processes_for(raw_path)`); one page or one process: in this process."""
    processes = processes_for(raw_path) if processes is None else processes
    spans = page_spans(raw_path)
    if processes <= 1 or len(spans) < 2:
        return normalise_rows(declaration, iter_raw_rows(raw_path), reference, run_dir, context)

    parts = _parts(spans, processes * PARTS_PER_PROCESS)
    parts_dir = run_dir / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    started = time.perf_counter()
    report = NormalisationReport(source=declaration.code)
    seen: set[bytes] = set()
    run_dir.mkdir(parents=True, exist_ok=True)
    outputs = {name: (run_dir / name).open("wb") for name in FILES}
    results = map_in_processes(
        _normalise_part,
        (declaration, raw_path, reference, context),
        [(parts_dir / f"{i:05d}", i, start, end) for i, (start, end) in enumerate(parts)],
        processes,
    )
    try:
        rows_before = 0
        for index, (part_report, part_seen) in enumerate(results):
            part_dir = parts_dir / f"{index:05d}"
            for name, output in outputs.items():
                with (part_dir / name).open("rb") as part_file:
                    shutil.copyfileobj(part_file, output, 1 << 20)
            shutil.rmtree(part_dir)
            base = (index << PART_SHIFT) - rows_before
            report.merge(part_report, lambda row, base=base: row - base)
            rows_before += part_report.rows_read
            seen |= part_seen
    finally:
        results.close()  # stops the workers at once if this step fails
        for output in outputs.values():
            output.close()
        shutil.rmtree(parts_dir, ignore_errors=True)
    report.duplicates = report.acteurs_written - len(seen)
    report.processes = min(processes, len(parts))
    report.seconds = time.perf_counter() - started
    return report
