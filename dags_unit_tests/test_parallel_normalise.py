"""Normalising with several processes writes what one process writes (row numbers of acteurs.tsv
aside), with the same report: counts, duplicates across parts, examples with true row numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes.generated import pointsapport_row
from qfdmo.carte_db.reference import reference_codes_from_files
from qfdmo.carte_db.staging_format import ACTEUR_COLUMNS, ACTEURS_FILE, FILES
from qfdmo.feeds import FeedError, page_spans
from qfdmo.pipeline.parallel_normalise import (
    PARALLEL_MIN_BYTES,
    PROCESSES_ENV,
    default_processes,
    normalise_feed,
    processes_for,
)
from qfdmo.sources import NormalisationContext, load_declarations

REFERENCE = reference_codes_from_files()
ROW_NUMBER = ACTEUR_COLUMNS.index("row_number")


def write_raw(path: Path, rows: list[object], page_size: int) -> None:
    with path.open("w", encoding="utf-8") as raw:
        for start in range(0, len(rows), page_size):
            raw.write(json.dumps({"next": f"http://x/lines?after={start}", "results": rows[start : start + page_size]}))
            raw.write("\n")


def feed_rows() -> list[object]:
    rows: list[object] = [pointsapport_row(i) for i in range(1, 1201)]
    rows[10]["nom_de_lorganisme"] = ""  # rejected: missing nom
    rows[700]["nom_de_lorganisme"] = ""
    rows[999]["latitudewgs84"] = rows[999]["longitudewgs84"] = ""  # rejected: missing location
    rows[1100] = dict(rows[20])  # a duplicate in another part of the feed
    rows[1150] = "not an object"
    rows[300]["produitsdechets_acceptes"] = "Vêtement|Objet inconnu"
    return rows


def normalised(tmp_path: Path, name: str, processes: int) -> tuple[dict[str, object], dict[str, list[str]]]:
    run_dir = tmp_path / name
    run_dir.mkdir()
    write_raw(run_dir / "raw.jsonl", feed_rows(), page_size=100)
    report = normalise_feed(
        load_declarations()["refashion"], run_dir / "raw.jsonl", REFERENCE, run_dir, NormalisationContext(), processes
    ).to_dict()
    report.pop("seconds")
    files = {name: (run_dir / name).read_text(encoding="utf-8").splitlines() for name in FILES}
    assert not (run_dir / "parts").exists()
    return report, files


def test_several_processes_write_what_one_writes(tmp_path):
    one_report, one_files = normalised(tmp_path, "one", processes=1)
    many_report, many_files = normalised(tmp_path, "many", processes=3)
    assert (one_report.pop("processes"), many_report.pop("processes")) == (1, 3)
    assert many_report == one_report
    assert one_report["rows_read"] == 1200 and one_report["duplicates"] == 1
    assert one_report["rejection_examples"]["missing nom"][1]["row"] == 701
    for name in FILES:
        if name != ACTEURS_FILE:
            assert many_files[name] == one_files[name]

    def without_row_number(lines: list[str]) -> list[list[str]]:
        return [line.split("\t")[:ROW_NUMBER] + line.split("\t")[ROW_NUMBER + 1 :] for line in lines]

    assert without_row_number(many_files[ACTEURS_FILE]) == without_row_number(one_files[ACTEURS_FILE])
    numbers = [int(line.split("\t")[ROW_NUMBER]) for line in many_files[ACTEURS_FILE]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)  # still in feed order


def test_a_failing_part_fails_the_step_and_leaves_no_part(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_raw(run_dir / "raw.jsonl", feed_rows(), page_size=100)
    with (run_dir / "raw.jsonl").open("a", encoding="utf-8") as raw:
        raw.write('{"results": [truncated\n')
    with pytest.raises(FeedError, match="not valid JSON"):
        normalise_feed(
            load_declarations()["refashion"], run_dir / "raw.jsonl", REFERENCE, run_dir, NormalisationContext(), 2
        )
    assert not (run_dir / "parts").exists()


def test_page_spans_cover_the_file(tmp_path):
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes(b'{"results": []}\n{"results": [1]}\n{"results": [2]}')
    spans = page_spans(raw)
    pages = [raw.read_bytes()[a:b] for a, b in spans]
    assert pages == [b'{"results": []}\n', b'{"results": [1]}\n', b'{"results": [2]}']
    raw.write_bytes(b"")
    assert page_spans(raw) == []


def test_process_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(PROCESSES_ENV, "3")
    assert default_processes() == 3
    monkeypatch.setenv(PROCESSES_ENV, "many")
    assert 1 <= default_processes() <= 4
    monkeypatch.delenv(PROCESSES_ENV)
    assert 1 <= default_processes() <= 4


def test_a_small_feed_is_normalised_in_one_process_unless_configured(monkeypatch, tmp_path):
    raw = tmp_path / "raw.jsonl"
    with raw.open("wb") as file:
        file.truncate(PARALLEL_MIN_BYTES - 1)
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    assert processes_for(raw) == 1
    with raw.open("ab") as file:
        file.write(b"\n")
    assert processes_for(raw) == default_processes()
    monkeypatch.setenv(PROCESSES_ENV, "2")
    raw.write_bytes(b"{}\n")
    assert processes_for(raw) == 2  # a count set by a person is theirs, whatever the size


def test_process_count_respects_a_container_cpu_quota(monkeypatch, tmp_path):
    monkeypatch.delenv(PROCESSES_ENV, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPU
    assert default_processes(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert default_processes(tmp_path) == 4
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1: 1 CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert default_processes(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert default_processes(tmp_path) == 4
