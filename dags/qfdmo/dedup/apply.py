"""Applying validated suggestions (statut ATRAITER) to the carte, each in its own transaction.

    ATRAITER --(committed first)--> ENCOURS --(changes + statut in one transaction)--> SUCCES
                                            \\--(anything wrong: rolled back)--> ERREUR (reason in metadata)

A suggestion left ENCOURS by a crash is picked again: its changes were rolled back with the crash,
and every change is idempotent (a parent that exists already as this parent is updated, a child
already under its target parent is left, a parent already deleted is skipped). A suggestion whose
acteurs changed since it was proposed (gone, SUPPRIME or INACTIF, already under another parent, a
kept parent gone) is never half-applied: the whole suggestion is rolled back and set ERREUR with
the reason. Then each touched cohorte is ENCOURS while some of its suggestions wait, else SUCCES.
"""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
from psycopg import sql

from qfdmo.dedup.clusters import CREATE_PARENT, DELETE_PARENT, KEEP_PARENT, PARENT_FIELDS, UPDATE_PARENT_ID

TO_APPLY = ("ATRAITER", "ENCOURS")
# Only the suggestions whose change models this module knows; the webapp's other kinds (source
# ingestion, enrichment) are left to whoever applies them.
APPLIED_TYPES = ("CLUSTERING",)
_WAITING_SQL = """
    SELECT s.id FROM data_suggestion s JOIN data_suggestioncohorte c ON c.id = s.suggestion_cohorte_id
    WHERE s.statut = ANY(%s) AND c.type_action = ANY(%s)
"""
WAITING = ("AVALIDER", "ATRAITER", "ENCOURS")
_TEXT_FIELDS = tuple(f for f in PARENT_FIELDS if f not in (
    "acteur_type_id", "action_principale_id", "exclusivite_de_reprisereparation", "uniquement_sur_rdv",
    "siret_is_closed", "latitude", "longitude"))
_OTHER_FIELDS = ("acteur_type_id", "action_principale_id", "exclusivite_de_reprisereparation",
                 "uniquement_sur_rdv", "siret_is_closed")
_REVISION_RELATIONS = (
    "DELETE FROM qfdmo_revisionpropositionservice_sous_categories WHERE revisionpropositionservice_id IN"
    " (SELECT id FROM qfdmo_revisionpropositionservice WHERE acteur_id = %(id)s)",
    "DELETE FROM qfdmo_revisionpropositionservice WHERE acteur_id = %(id)s",
    "DELETE FROM qfdmo_revisionacteur_labels WHERE revisionacteur_id = %(id)s",
    "DELETE FROM qfdmo_revisionacteur_acteur_services WHERE revisionacteur_id = %(id)s",
    "DELETE FROM qfdmo_revisionperimetreadomicile WHERE acteur_id = %(id)s",
)


class StaleSuggestion(Exception):
    """The carte changed since the suggestion was made: applying it would be wrong."""


def has_work(dsn: str) -> bool:
    """Cheap: is any suggestion waiting to be applied?"""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT EXISTS ({_WAITING_SQL})", (list(TO_APPLY), list(APPLIED_TYPES))).fetchone()
    return bool(row and row[0])


def apply_pending(dsn: str) -> dict[str, Any]:
    """Applies every ATRAITER (and crash-left ENCOURS) suggestion; returns the report."""
    started = time.perf_counter()
    report: dict[str, Any] = {"picked": 0, "succes": 0, "erreur": 0, "errors": [], "cohortes": {}}
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(f"{_WAITING_SQL} ORDER BY s.id",
                                          (list(TO_APPLY), list(APPLIED_TYPES))).fetchall()]
        touched: set[int] = set()
        for suggestion_id in ids:
            claimed = _claim(conn, suggestion_id)
            if claimed is None:
                continue  # decided otherwise meanwhile (rejected, applied by another run)
            cohorte_id, suggestion = claimed
            touched.add(cohorte_id)
            report["picked"] += 1
            try:
                with conn.transaction():
                    apply_changes(conn, suggestion)
                    conn.execute("UPDATE data_suggestion SET statut = 'SUCCES', modifie_le = now() WHERE id = %s",
                                 (suggestion_id,))
                report["succes"] += 1
            except (StaleSuggestion, psycopg.Error, KeyError, TypeError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}".strip()
                conn.execute(
                    "UPDATE data_suggestion SET statut = 'ERREUR', modifie_le = now(),"
                    " metadata = coalesce(metadata, '{}'::jsonb) || %s WHERE id = %s",
                    (json.dumps({"error": reason}), suggestion_id),
                )
                report["erreur"] += 1
                report["errors"].append({"suggestion_id": suggestion_id, "reason": reason})
        report["cohortes"] = update_cohortes(conn, touched)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


def _claim(conn: psycopg.Connection, suggestion_id: int) -> tuple[int, dict[str, Any]] | None:
    """Sets one waiting suggestion ENCOURS (committed: visible in the admin while it is applied)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE data_suggestion SET statut = 'ENCOURS', modifie_le = now()"
            " WHERE id = %s AND statut = ANY(%s) RETURNING suggestion_cohorte_id, suggestion",
            (suggestion_id, list(TO_APPLY)),
        ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def update_cohortes(conn: psycopg.Connection, cohorte_ids: set[int]) -> dict[str, str]:
    rows = conn.execute(
        """
        UPDATE data_suggestioncohorte c SET modifie_le = now(),
            statut = CASE WHEN EXISTS (SELECT FROM data_suggestion s WHERE s.suggestion_cohorte_id = c.id
                                       AND s.statut = ANY(%s)) THEN 'ENCOURS' ELSE 'SUCCES' END
        WHERE c.id = ANY(%s) RETURNING c.id, c.statut
        """,
        (list(WAITING), sorted(cohorte_ids)),
    ).fetchall()
    return {str(i): s for i, s in rows}


def apply_changes(conn: psycopg.Connection, suggestion: dict[str, Any]) -> None:
    """The suggestion's changes in `order`, in the caller's transaction."""
    changes = sorted(suggestion["changes"], key=lambda c: c["order"])
    for change in changes:
        model, params = change["model_name"], change["model_params"]
        identifiant, data = params["id"], params.get("data") or {}
        if model == CREATE_PARENT:
            _create_parent(conn, identifiant, data)
        elif model == KEEP_PARENT:
            _keep_parent(conn, identifiant, data)
        elif model == UPDATE_PARENT_ID:
            _update_parent_id(conn, identifiant, data["parent_id"], data.get("previous_parent_id"))
        elif model == DELETE_PARENT:
            _delete_parent(conn, identifiant)
        else:
            raise ValueError(f"unsupported change model {model!r}")


def _one(conn: psycopg.Connection, query: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    return conn.execute(query, args).fetchone()


def _parent_values(data: dict[str, Any]) -> tuple[list[str], list[Any]]:
    unknown = set(data) - set(PARENT_FIELDS)
    if unknown:
        raise ValueError(f"unknown parent field(s): {', '.join(sorted(unknown))}")
    columns, values = [], []
    for name in _TEXT_FIELDS:
        if name in data:
            columns.append(name)
            values.append("" if data[name] is None else str(data[name]))
    for name in _OTHER_FIELDS:
        if name in data:
            columns.append(name)
            values.append(data[name])
    return columns, values


def _location(data: dict[str, Any]) -> sql.Composable:
    if data.get("latitude") is None or data.get("longitude") is None:
        return sql.SQL("NULL")
    return sql.SQL("ST_SetSRID(ST_MakePoint({}, {}), 4326)::geography").format(
        sql.Literal(float(data["longitude"])), sql.Literal(float(data["latitude"])))


def _write_parent_fields(conn: psycopg.Connection, identifiant: str, data: dict[str, Any]) -> None:
    columns, values = _parent_values(data)
    assignments: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns]
    if "latitude" in data:
        assignments.append(sql.SQL("location = {}").format(_location(data)))
    assignments.append(sql.SQL("modifie_le = now()"))
    conn.execute(sql.SQL("UPDATE qfdmo_revisionacteur SET {} WHERE identifiant_unique = %s").format(
        sql.SQL(", ").join(assignments)), (*values, identifiant))


def _create_parent(conn: psycopg.Connection, identifiant: str, data: dict[str, Any]) -> None:
    if _one(conn, "SELECT FROM qfdmo_acteur WHERE identifiant_unique = %s", (identifiant,)):
        raise StaleSuggestion(f"new parent {identifiant} is an acteur's identifiant")
    existing = _one(conn, "SELECT parent_id, source_id FROM qfdmo_revisionacteur WHERE identifiant_unique = %s"
                    " FOR UPDATE", (identifiant,))
    if existing is not None:
        if existing[0] is not None or existing[1] is not None:
            raise StaleSuggestion(f"new parent {identifiant} exists and is not a parent")
    else:
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, statut, public_accueilli, reprise, source_id)"
            " VALUES (%s, 'ACTIF', '', '', NULL)", (identifiant,))
    _write_parent_fields(conn, identifiant, data)


def _keep_parent(conn: psycopg.Connection, identifiant: str, data: dict[str, Any]) -> None:
    row = _one(conn, "SELECT statut, parent_id FROM qfdmo_revisionacteur WHERE identifiant_unique = %s FOR UPDATE",
               (identifiant,))
    if row is None:
        raise StaleSuggestion(f"kept parent {identifiant} is gone")
    if row[0] != "ACTIF":
        raise StaleSuggestion(f"kept parent {identifiant} is {row[0]}")
    if row[1] is not None:
        raise StaleSuggestion(f"kept parent {identifiant} has a parent ({row[1]})")
    _write_parent_fields(conn, identifiant, data)


def _update_parent_id(conn: psycopg.Connection, child: str, parent_id: str, previous: str | None) -> None:
    if child == parent_id:
        raise ValueError(f"{child} cannot be its own parent")
    acteur = _one(conn, "SELECT statut, acteur_type_id FROM qfdmo_acteur WHERE identifiant_unique = %s FOR UPDATE",
                  (child,))
    if acteur is None:
        raise StaleSuggestion(f"acteur {child} is gone")
    if acteur[0] != "ACTIF":
        raise StaleSuggestion(f"acteur {child} is {acteur[0]}")
    revision = _one(conn, "SELECT statut, parent_id FROM qfdmo_revisionacteur WHERE identifiant_unique = %s"
                    " FOR UPDATE", (child,))
    if revision is not None:
        if revision[0] != "ACTIF":
            raise StaleSuggestion(f"acteur {child} is {revision[0]} (revision)")
        if revision[1] == parent_id:
            return  # already done
        if revision[1] is not None and revision[1] != previous:
            raise StaleSuggestion(f"acteur {child} is already under parent {revision[1]}")
    if _one(conn, "SELECT FROM qfdmo_revisionacteur WHERE identifiant_unique = %s AND parent_id IS NOT NULL",
            (parent_id,)):
        raise StaleSuggestion(f"parent {parent_id} has a parent itself")
    if _one(conn, "SELECT FROM qfdmo_revisionacteur WHERE parent_id = %s LIMIT 1", (child,)):
        raise StaleSuggestion(f"acteur {child} is a parent")
    if revision is None:
        # The child's revision only carries the link (empty fields fall back to the acteur's).
        conn.execute(
            "INSERT INTO qfdmo_revisionacteur (identifiant_unique, acteur_type_id, statut, public_accueilli,"
            " reprise, parent_id, parent_reason) VALUES (%s, %s, 'ACTIF', '', '', %s, %s)",
            (child, acteur[1], parent_id, "dedup"))
    else:
        conn.execute("UPDATE qfdmo_revisionacteur SET parent_id = %s, parent_reason = 'dedup', modifie_le = now()"
                     " WHERE identifiant_unique = %s", (parent_id, child))


def _delete_parent(conn: psycopg.Connection, identifiant: str) -> None:
    if _one(conn, "SELECT FROM qfdmo_revisionacteur WHERE identifiant_unique = %s FOR UPDATE", (identifiant,)) is None:
        return  # already deleted
    active = _one(conn, """
        SELECT r.identifiant_unique FROM qfdmo_revisionacteur r
        LEFT JOIN qfdmo_acteur a USING (identifiant_unique)
        WHERE r.parent_id = %s AND r.statut = 'ACTIF' AND coalesce(a.statut, 'ACTIF') = 'ACTIF' LIMIT 1
    """, (identifiant,))
    if active is not None:
        raise StaleSuggestion(f"parent {identifiant} still has the ACTIF child {active[0]}")
    conn.execute("UPDATE qfdmo_revisionacteur SET parent_id = NULL, modifie_le = now() WHERE parent_id = %s",
                 (identifiant,))
    for statement in _REVISION_RELATIONS:
        conn.execute(statement, {"id": identifiant})
    conn.execute("DELETE FROM qfdmo_revisionacteur WHERE identifiant_unique = %s", (identifiant,))
