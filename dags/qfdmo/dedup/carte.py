"""The dedup's reads from and writes to the carte database (psycopg 3).

Reads stream out with COPY (no row-by-row fetch) into a CSV file that DuckDB loads; the writes of a
run (one cohorte, its suggestions) are one transaction, the suggestions COPYed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from qfdmo.dedup.params import ClusteringParams

TYPE_ACTION = "CLUSTERING"
PENDING = ("AVALIDER", "ATRAITER", "ENCOURS")
# The columns read, with their DuckDB types (CSV carries text: types are given, never sniffed).
READ_COLUMNS = {
    "identifiant_unique": "VARCHAR", "est_parent": "BOOLEAN", "source_id": "INTEGER",
    "acteur_type_id": "INTEGER", "nom": "VARCHAR", "description": "VARCHAR", "adresse": "VARCHAR",
    "adresse_complement": "VARCHAR", "code_postal": "VARCHAR", "ville": "VARCHAR", "url": "VARCHAR",
    "email": "VARCHAR", "telephone": "VARCHAR", "nom_commercial": "VARCHAR", "nom_officiel": "VARCHAR",
    "siren": "VARCHAR", "siret": "VARCHAR", "naf_principal": "VARCHAR", "commentaires": "VARCHAR",
    "horaires_osm": "VARCHAR", "horaires_description": "VARCHAR", "public_accueilli": "VARCHAR",
    "reprise": "VARCHAR", "consignes_dacces": "VARCHAR", "action_principale_id": "INTEGER",
    "exclusivite_de_reprisereparation": "BOOLEAN", "uniquement_sur_rdv": "BOOLEAN",
    "siret_is_closed": "BOOLEAN", "latitude": "DOUBLE", "longitude": "DOUBLE",
}

# An orphan of the view that a revision already puts under a parent (applied since the last
# compute_acteurs; or a link compute_acteurs found invalid, which applying would refuse too), or a
# parent of the view whose revision is gone (deleted as parent since): its parent link is not the
# view's yet. Over the alias `s` of the selected view rows.
UNSETTLED = sql.SQL(
    "(EXISTS (SELECT FROM qfdmo_revisionacteur r WHERE r.identifiant_unique = s.identifiant_unique"
    " AND r.parent_id IS NOT NULL) OR (s.est_parent AND NOT EXISTS (SELECT FROM qfdmo_revisionacteur r"
    " WHERE r.identifiant_unique = s.identifiant_unique)))"
)


class DedupDataError(ValueError):
    """A parameter that names something the carte does not have (unknown source or acteur type code)."""


@dataclass
class ReadResult:
    acteurs_csv: Path
    children_csv: Path
    acteurs: int
    children: int
    without_location: int
    without_code_postal: int
    skipped_already_proposed: int
    skipped_not_recomputed: int
    rejected_pairs: list[tuple[str, str]] = field(default_factory=list)
    source_ids: dict[str, int] = field(default_factory=dict)


def _codes_to_ids(conn: psycopg.Connection, table: str, codes: list[str]) -> dict[str, int]:
    if not codes:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT code, id FROM {} WHERE code = ANY(%s)").format(sql.Identifier(table)), (codes,)
    ).fetchall()
    found = {code: ident for code, ident in rows}
    missing = [c for c in codes if c not in found]
    if missing:
        raise DedupDataError(f"unknown {table.removeprefix('qfdmo_')} code(s): {', '.join(missing)}")
    return found


def read_members(dsn: str, params: ClusteringParams, folder: Path) -> ReadResult:
    """COPY the ACTIF orphans and parents that the params select, and every child, to CSV files.

    An acteur already in a pending clustering suggestion (AVALIDER, ATRAITER, ENCOURS) is left out:
    it is proposed once, and again only after a decision. So is an acteur whose parent link changed
    since the view was computed (UNSETTLED): the view lags the revisions until compute_acteurs has
    run after apply_suggestions, and proposing such an acteur again would duplicate a cluster just
    applied. Pairs of a REJETEE suggestion are returned so that clustering never joins them again."""
    folder.mkdir(parents=True, exist_ok=True)
    acteurs_csv, children_csv = folder / "acteurs.csv", folder / "children.csv"
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # one snapshot
        source_ids = _codes_to_ids(conn, "qfdmo_source", params.sources)
        type_ids = _codes_to_ids(conn, "qfdmo_acteurtype", params.acteur_types)
        pending = _suggested_members(conn, PENDING)
        conn.execute("CREATE TEMP TABLE dedup_pending (identifiant_unique varchar PRIMARY KEY) ON COMMIT DROP")
        with conn.cursor().copy("COPY dedup_pending FROM STDIN") as copy:
            for ident in {i for members in pending.values() for i in members}:
                copy.write_row((ident,))
        filters = [sql.SQL("v.statut = 'ACTIF' AND v.parent_id IS NULL")]
        args: list[Any] = []
        if type_ids:
            filters.append(sql.SQL("v.acteur_type_id = ANY(%s)"))
            args.append(list(type_ids.values()))
        if source_ids:
            filters.append(sql.SQL(
                "(v.source_id = ANY(%s) OR (v.est_parent AND EXISTS (SELECT FROM qfdmo_vueacteur c"
                " WHERE c.parent_id = v.identifiant_unique AND c.statut = 'ACTIF' AND c.source_id = ANY(%s))))"
            ))
            args += [list(source_ids.values())] * 2
        where = sql.SQL(" AND ").join(filters)
        columns = sql.SQL(", ").join(sql.SQL("v.{}").format(sql.Identifier(c)) for c in READ_COLUMNS)
        selected = sql.SQL("SELECT {} FROM qfdmo_vueacteur v WHERE {}").format(columns, where)
        pending_member = sql.SQL(
            "EXISTS (SELECT FROM dedup_pending p WHERE p.identifiant_unique = s.identifiant_unique)")
        skipped = conn.execute(
            sql.SQL("SELECT count(*) FILTER (WHERE {p}), count(*) FILTER (WHERE NOT {p} AND {u})"
                    " FROM ({s}) s").format(p=pending_member, u=UNSETTLED, s=selected),
            args,
        ).fetchone()
        query = sql.SQL(
            "COPY (SELECT s.* FROM ({}) s WHERE NOT {} AND NOT {}) TO STDOUT (FORMAT csv, HEADER)"
        ).format(selected, pending_member, UNSETTLED)
        _copy_to_file(conn, query, args, acteurs_csv)
        _copy_to_file(conn, sql.SQL(
            "COPY (SELECT identifiant_unique, parent_id, statut, source_id FROM qfdmo_vueacteur"
            " WHERE parent_id IS NOT NULL) TO STDOUT (FORMAT csv, HEADER)"), [], children_csv)
        gaps = conn.execute(
            sql.SQL("SELECT count(*) FILTER (WHERE s.latitude IS NULL), count(*) FILTER (WHERE s.code_postal = ''),"
                    " count(*) FROM ({}) s").format(selected), args).fetchone()
        children = one_count(conn, "SELECT count(*) FROM qfdmo_vueacteur WHERE parent_id IS NOT NULL")
        rejected = _suggested_members(conn, ("REJETEE",))
    already_proposed, not_recomputed = (int(skipped[0]), int(skipped[1])) if skipped else (0, 0)
    rejected_pairs = [
        (a, b) for members in rejected.values() for i, a in enumerate(sorted(members)) for b in sorted(members)[i + 1:]
    ]
    return ReadResult(
        acteurs_csv=acteurs_csv, children_csv=children_csv,
        acteurs=(int(gaps[2]) if gaps else 0) - already_proposed - not_recomputed, children=children,
        without_location=int(gaps[0]) if gaps else 0, without_code_postal=int(gaps[1]) if gaps else 0,
        skipped_already_proposed=already_proposed, skipped_not_recomputed=not_recomputed,
        rejected_pairs=rejected_pairs,
        source_ids=source_ids,
    )


def source_ids_by_code(dsn: str, codes: list[str]) -> list[int]:
    """The ids of `codes` in their order (source priority)."""
    with psycopg.connect(dsn) as conn:
        found = _codes_to_ids(conn, "qfdmo_source", codes)
    return [found[c] for c in codes]


def _copy_to_file(conn: psycopg.Connection, query: sql.Composed | sql.SQL, args: list[Any], path: Path) -> None:
    with path.open("wb") as out, conn.cursor().copy(query, args or None) as copy:
        for block in copy:
            out.write(block)


def one_count(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _suggested_members(conn: psycopg.Connection, statuts: tuple[str, ...]) -> dict[int, set[str]]:
    """suggestion id -> identifiants of its members (and of their children) for clustering
    suggestions in these statuts."""
    rows = conn.execute(
        """
        SELECT s.id, m ->> 'identifiant_unique', m -> 'children'
        FROM data_suggestion s
        JOIN data_suggestioncohorte c ON c.id = s.suggestion_cohorte_id
        CROSS JOIN LATERAL jsonb_array_elements(coalesce(s.contexte -> 'members', '[]'::jsonb)) m
        WHERE c.type_action = %s AND s.statut = ANY(%s)
        """,
        (TYPE_ACTION, list(statuts)),
    ).fetchall()
    members: dict[int, set[str]] = {}
    for suggestion_id, ident, children in rows:
        group = members.setdefault(suggestion_id, set())
        if ident:
            group.add(ident)
        for child in children or []:
            if isinstance(child, dict) and child.get("identifiant_unique"):
                group.add(child["identifiant_unique"])
    return members


def write_suggestions(
    dsn: str, *, dag_id: str, run_id: str, metadata: dict[str, Any], suggestions: Iterable[dict[str, Any]]
) -> tuple[int, int]:
    """One cohorte and its suggestions, in one transaction. Returns (cohorte id, suggestions written)."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        row = conn.execute(
            "INSERT INTO data_suggestioncohorte (identifiant_action, identifiant_execution, type_action, metadata)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (dag_id, run_id, TYPE_ACTION, json.dumps(metadata)),
        ).fetchone()
        assert row is not None
        cohorte_id = int(row[0])
        written = 0
        with conn.cursor().copy(
            "COPY data_suggestion (suggestion_cohorte_id, contexte, suggestion, metadata) FROM STDIN"
        ) as copy:
            for item in suggestions:
                copy.write_row((cohorte_id, json.dumps(item["contexte"], ensure_ascii=False),
                                json.dumps(item["suggestion"], ensure_ascii=False),
                                json.dumps(item.get("metadata"), ensure_ascii=False)))
                written += 1
        if written:
            conn.execute("UPDATE data_suggestioncohorte SET metadata = metadata || %s WHERE id = %s",
                         (json.dumps({"suggestions": written}), cohorte_id))
    return cohorte_id, written
