"""Dedup benchmark: a labelled set of generated acteurs (dags_unit_tests/fakes/dedup_acteurs.py,
~10 % in duplicate groups, hard negatives) loaded into a throwaway carte database, clustered end to
end by cluster_acteurs' function (read -> normalise -> block + score -> cluster -> suggestions
written), at the default params; then, on the same data in the same run, a reimplementation of the
upstream method (exact blocking on code postal + ville, TF-IDF word cosine >= 0.5 on nom then
adresse, connected components, no intra-source clusters).

    .venv/bin/python bench/dedup.py [--rows 500000] [--skip-upstream]

Prints, for both, the time and the pairwise precision and recall (a pair of acteurs is predicted
when they are in one cluster, true when the generator made them from one place). Our clustering
runs in a child process, so its peak memory (max RSS of that process: Python, DuckDB, splink) is
measured alone; PostgreSQL is excluded. Exits 1 when a target is missed: precision >= 0.98,
recall >= 0.90, <= 120 s end to end, peak memory <= 3 GB. Timings are noisy on a shared machine:
the upstream method's time, measured in the same run, is the baseline to compare with.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "dags"), str(REPO / "dags_unit_tests")]

import psycopg  # noqa: E402
from fakes.dedup_acteurs import generate, true_pairs  # noqa: E402
from fakes.dedup_carte import insert_acteurs  # noqa: E402

from devstack.postgres import PostgresServer  # noqa: E402
from devstack.processes import ProcessGroup, free_port  # noqa: E402
from devstack.stack import migrate_carte_db  # noqa: E402

PRECISION_MIN, RECALL_MIN, SECONDS_MAX, MEMORY_MAX_MB = 0.98, 0.90, 120.0, 3072


def pairwise(clusters: list[list[str]], truth: set[tuple[str, str]]) -> dict[str, float]:
    predicted = set()
    for members in clusters:
        members = sorted(members)
        predicted |= {(a, b) for i, a in enumerate(members) for b in members[i + 1:]}
    hits = len(predicted & truth)
    return {"precision": hits / len(predicted) if predicted else 1.0, "recall": hits / len(truth) if truth else 1.0,
            "predicted_pairs": len(predicted), "true_pairs": len(truth)}


# ---------------------------------------------------------------- the upstream method, reimplemented
def _upstream_normalise(text: str, min_length: int) -> list[str]:
    text = unicodedata.normalize("NFD", (text or "").lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return [w for w in re.sub(r"[^a-z0-9]+", " ", text).split() if len(w) > min_length]


def _tfidf_components(ids: list[str], docs: dict[str, list[str]], threshold: float) -> list[list[str]]:
    """TF-IDF (smooth idf, l2) fitted on this group only, cosine >= threshold, connected components."""
    n = len(ids)
    df: dict[str, int] = defaultdict(int)
    for i in ids:
        for w in set(docs[i]):
            df[w] += 1
    vectors: dict[str, dict[str, float]] = {}
    postings: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        counts: dict[str, int] = defaultdict(int)
        for w in docs[i]:
            counts[w] += 1
        vector = {w: c * (math.log((1 + n) / (1 + df[w])) + 1) for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vector.values())) or 1.0
        vectors[i] = {w: v / norm for w, v in vector.items()}
        for w in vectors[i]:
            postings[w].append(i)
    parent = {i: i for i in ids}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in ids:
        dots: dict[str, float] = defaultdict(float)
        for w, v in vectors[i].items():
            for j in postings[w]:
                if j > i:
                    dots[j] += v * vectors[j][w]
        for j, score in dots.items():
            if score >= threshold:
                parent[find(i)] = find(j)
    groups: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        groups[find(i)].append(i)
    return list(groups.values())


def _split_by_source(members: list[str], source: dict[str, int]) -> list[list[str]]:
    """Greedy: each member goes to the first subcluster without its source."""
    parts: list[tuple[set[int], list[str]]] = []
    for m in sorted(members):
        for sources, part in parts:
            if source[m] not in sources:
                sources.add(source[m])
                part.append(m)
                break
        else:
            parts.append(({source[m]}, [m]))
    return [p for _, p in parts if len(p) > 1]


def upstream_clusters(rows: list[dict]) -> list[list[str]]:
    blocks: dict[tuple[str, str], list[str]] = defaultdict(list)
    noms, adresses, source = {}, {}, {}
    for row in rows:
        if not row["code_postal"]:
            continue  # "all these fields filled" (default code_postal)
        i = row["identifiant_unique"]
        blocks[(row["code_postal"], " ".join(_upstream_normalise(row["ville"], 0)))].append(i)
        noms[i] = _upstream_normalise(row["nom"], 2)
        adresses[i] = _upstream_normalise(row["adresse"], 0)
        source[i] = row["source_id"]
    clusters: list[list[str]] = []
    for ids in blocks.values():
        if len(ids) < 2:
            continue
        for by_nom in _tfidf_components(ids, noms, 0.5):
            if len(by_nom) < 2:
                continue
            for by_adresse in _tfidf_components(by_nom, adresses, 0.5):
                if len(by_adresse) > 1:
                    clusters += _split_by_source(by_adresse, source)
    return clusters


# ---------------------------------------------------------------- ours, in a child process
def cluster_child(dsn: str, out: str) -> None:
    from qfdmo.dedup.params import ClusteringParams
    from qfdmo.dedup.run import run_clustering

    started = time.perf_counter()
    report = run_clustering(dsn, ClusteringParams(), dag_id="cluster_acteurs", run_id="bench")
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    report["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    Path(out).write_text(json.dumps(report))


def main() -> int:
    parser = argparse.ArgumentParser(description="QFDMO dedup benchmark")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--skip-upstream", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("DSN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cluster_child(*args.child)
        return 0

    work = Path(tempfile.mkdtemp(prefix="qfdmo-bench-dedup-"))
    group = ProcessGroup(logs_dir=work / "logs")
    try:
        postgres = PostgresServer(work / "postgres", free_port(), ephemeral=True)
        postgres.start(group)
        postgres.create_database("carte", postgis=True)
        dsn = postgres.dsn("carte")
        migrate_carte_db(dsn)
        started = time.perf_counter()
        rows = generate(args.rows)
        with psycopg.connect(dsn) as conn:
            insert_acteurs(conn, rows, with_acteurs=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE qfdmo_vueacteur")
        truth = true_pairs(rows)
        entity_sizes: dict[str, int] = defaultdict(int)
        for row in rows:
            entity_sizes[row["entite"]] += 1
        in_groups = sum(n for n in entity_sizes.values() if n > 1)
        print(f"generated and loaded {len(rows)} acteurs ({in_groups} in duplicate groups, {len(truth)} true pairs)"
              f" in {time.perf_counter() - started:.1f} s (untimed)")

        out = work / "report.json"
        subprocess.run([sys.executable, __file__, "--child", dsn, str(out)], check=True)
        report = json.loads(out.read_text())
        with psycopg.connect(dsn) as conn:
            clusters = [
                [m["identifiant_unique"] for m in contexte["members"]]
                for (contexte,) in conn.execute("SELECT contexte FROM data_suggestion")
            ]
        ours = pairwise(clusters, truth)
        print(f"ours (splink, threshold {report['match_threshold']}): {report['wall_seconds']} s end to end"
              f" (read -> suggestions written), peak memory {report['max_rss_mb']} MB,"
              f" precision {ours['precision']:.4f}, recall {ours['recall']:.4f}"
              f" ({ours['predicted_pairs']} predicted pairs, {report['clusters']} clusters)")
        print(f"  steps (s): {json.dumps(report['seconds'])}")
        print(f"  candidate pairs (compared) {report['candidate_pairs']}, blocks skipped"
              f" {json.dumps(report['large_blocks_skipped'])}, cluster sizes {json.dumps(report['cluster_sizes'])}")

        if not args.skip_upstream:
            started = time.perf_counter()
            theirs = pairwise(upstream_clusters(rows), truth)
            upstream_seconds = time.perf_counter() - started
            print(f"upstream method (reimplemented, in memory, no DB round trip): {upstream_seconds:.1f} s,"
                  f" precision {theirs['precision']:.4f}, recall {theirs['recall']:.4f}"
                  f" ({theirs['predicted_pairs']} predicted pairs)")
            print(f"  ratio of times ours / upstream: {report['wall_seconds'] / upstream_seconds:.2f}")

        missed = []
        if ours["precision"] < PRECISION_MIN:
            missed.append(f"precision {ours['precision']:.4f} < {PRECISION_MIN}")
        if ours["recall"] < RECALL_MIN:
            missed.append(f"recall {ours['recall']:.4f} < {RECALL_MIN}")
        if report["wall_seconds"] > SECONDS_MAX:
            missed.append(f"time {report['wall_seconds']} s > {SECONDS_MAX} s")
        if report["max_rss_mb"] > MEMORY_MAX_MB:
            missed.append(f"memory {report['max_rss_mb']} MB > {MEMORY_MAX_MB} MB")
        print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
        return 1 if missed else 0
    finally:
        group.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
