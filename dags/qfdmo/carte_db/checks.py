"""Checks of a staged run before anything is written to the qfdmo tables.

Unknown codes were rejected upstream (normalisation); one that slips through stops the run here.
So do values the webapp would refuse: missing keys, acteurs of other sources, text longer than
its qfdmo_acteur column, values outside the choices of the webapp's models, two identifiant_unique
for one (source, identifiant_externe), and sets whose identifiant_unique has no acteur line.
Each check function returns the problems it found, one sentence each; the caller raises.
"""

from __future__ import annotations

import functools
import re

import psycopg
from psycopg import sql

from qfdmo.carte_db import statements as s
from qfdmo.carte_db.contract import load_contract
from qfdmo.carte_db.queries import one_row
from qfdmo.carte_db.run_tables import Laps, RunTables, SourceCodes
from qfdmo.carte_db.staging_format import CODE_COLUMNS, MANAGED_COLUMNS, TEXT_COLUMNS


@functools.cache
def webapp_choices() -> dict[str, tuple[str, ...]]:
    """The choices the webapp's models declare for the columns we write. Django checks them in its
    forms, the database does not: a value outside them would reach the carte unchecked."""
    columns = load_contract()["qfdmo_acteur"].columns
    return {c: columns[c].choices for c in MANAGED_COLUMNS if columns[c].choices}


@functools.cache
def length_limits() -> tuple[tuple[str, int], ...]:
    """(column, varchar limit) of the text columns we write, as the webapp's contract declares them."""
    columns = load_contract()["qfdmo_acteur"].columns
    limits = []
    for column in TEXT_COLUMNS:
        match = re.fullmatch(r"\s*varchar\s*\(\s*(\d+)\s*\)\s*", columns[column.name].type)
        if match:
            limits.append((column.name, int(match[1])))
    return tuple(limits)


def check_acteurs(cur: psycopg.Cursor, t: RunTables, source_codes: SourceCodes, lap: Laps) -> list[str]:
    """The staged acteurs' problems; without any, also gives them their primary key and statistics."""
    problems: list[str] = []
    limited = length_limits()
    choices = webapp_choices()
    checks = sql.SQL(", ").join(
        [
            sql.SQL("count(*) FILTER (WHERE coalesce(identifiant_unique, '') = '')"),
            *(
                sql.SQL("count(*) FILTER (WHERE coalesce({c}, '') = '')").format(c=sql.Identifier(c.name))
                for c in CODE_COLUMNS
            ),
            sql.SQL("count(*) FILTER (WHERE NOT (source_code = ANY(%(sources)s)))"),
            *(
                sql.SQL("count(*) FILTER (WHERE {id} IS NULL AND coalesce({c}, '') <> '')").format(
                    id=sql.Identifier(c.stored_as or ""), c=sql.Identifier(c.name)
                )
                for c in CODE_COLUMNS
            ),
            *(
                sql.SQL("count(*) FILTER (WHERE length({c}) > {n})").format(c=sql.Identifier(c), n=sql.Literal(n))
                for c, n in limited
            ),
            *(
                sql.SQL("count(*) FILTER (WHERE NOT ({c} = ANY({allowed})))").format(
                    c=sql.Identifier(c), allowed=sql.Literal(list(allowed))
                )
                for c, allowed in choices.items()
            ),
            sql.SQL(s.NOT_DERIVED_IDENTIFIANTS),
        ]
    )
    statement = s.q(s.CHECK_COUNTS, checks=checks, a=t.acteurs)
    counts = list(one_row(cur.execute(statement, {"sources": list(source_codes)})))
    no_id = counts.pop(0)
    missing = [counts.pop(0) for _ in CODE_COLUMNS]
    foreign = counts.pop(0)
    unknown = [counts.pop(0) for _ in CODE_COLUMNS]
    not_derived = counts.pop()
    too_long, outside_choices = counts[: len(limited)], counts[len(limited) :]
    if no_id or any(missing):
        named = [("identifiant_unique", no_id), *zip((c.name for c in CODE_COLUMNS), missing, strict=True)]
        problems.append("missing values: " + ", ".join(f"{name} x{n}" for name, n in named))
    if foreign:
        problems.append(f"{foreign} acteurs of sources outside the run's sources {sorted(source_codes)}")
    overflow = [f"{c} > {n} chars x{k}" for (c, n), k in zip(limited, too_long, strict=True) if k]
    if overflow:
        problems.append("values too long for qfdmo_acteur: " + ", ".join(overflow))
    for (column, allowed), count in zip(choices.items(), outside_choices, strict=True):
        if count:
            problems.append(_values_outside(cur, t.acteurs, column, allowed, count))
    for code, count in zip(CODE_COLUMNS, unknown, strict=True):
        if count:
            problems.append(_unknown_codes(cur, code.name, t.acteurs_raw, code.reference or ""))
    lap("check acteurs")

    # Say which acteurs collide instead of failing later on the unique index. Acteurs whose
    # identifiant_unique is derived from (source, identifiant_externe), as the normaliser makes it,
    # cannot collide with each other (the merge left one row per identifiant_unique): the grouping
    # is only needed when some identifiant_unique is not.
    collisions = cur.execute(s.q(s.CHECK_COLLISIONS, a=t.acteurs)).fetchall() if not_derived else []
    if collisions:
        problems.append(
            "several identifiant_unique share a (source, identifiant_externe): "
            + ", ".join(f"{src}/{ext!r} x{n}" for src, ext, n in collisions)
        )
    lap("check collisions")
    if not problems:
        cur.execute(s.q(s.ADD_PRIMARY_KEY, a=t.acteurs))
        lap("primary key")
        # Statistics of the join key only: enough for the planner, much cheaper than all columns.
        cur.execute(s.q(s.ANALYZE_KEY, t=t.acteurs))
        lap("analyze")
    return problems


def check_sets(cur: psycopg.Cursor, t: RunTables, source_codes: SourceCodes, lap: Laps) -> list[str]:
    """Unresolved codes of the propositions, labels and services, and rows of them whose
    identifiant_unique has no acteur line (one pass over each table)."""
    problems: list[str] = []
    sets = [
        (
            t.propositions,
            "propositions",
            [
                ("action_id IS NULL", "action_code", t.propositions_raw, "qfdmo_action"),
                ("-1 = ANY(souscategorie_ids)", "sous_categorie_code", t.propositions_raw, "qfdmo_souscategorieobjet"),
            ],
        ),
        (t.labels, "labels", [("labelqualite_id IS NULL", "label_code", t.labels_raw, "qfdmo_labelqualite")]),
        (
            t.services,
            "services",
            [("acteurservice_id IS NULL", "acteur_service_code", t.services_raw, "qfdmo_acteurservice")],
        ),
    ]
    for table, name, unresolved in sets:
        conditions = sql.SQL(", ").join(
            sql.SQL("count(*) FILTER (WHERE " + condition + ")") for condition, *_ in unresolved
        )
        unresolved_counts = one_row(cur.execute(s.q(s.CHECK_SET_COUNTS, x=table, conditions=conditions)))
        for count, (_, column, raw, ref) in zip(unresolved_counts, unresolved, strict=True):
            if count:
                problems.append(_unknown_codes(cur, column, raw, ref))
        lap(f"check {name}")
        cur.execute(s.q(s.ANALYZE_KEY, t=table))
        lap(f"analyze {name}")
    orphans: dict[str, int] = dict(
        cur.execute(s.q(s.CHECK_ORPHANS, p=t.propositions, l=t.labels, s=t.services, a=t.acteurs_raw)).fetchall()
    )
    lap("check sets without acteur")
    if orphans:
        named = ", ".join(f"{orphans[name]} {name}" for _, name, _ in sets if name in orphans)
        problems.append(f"{named} of an identifiant_unique without acteur line")
    return problems


def _values_outside(
    cur: psycopg.Cursor, acteurs: sql.Composable, column: str, allowed: tuple[str, ...], count: int
) -> str:
    """Rare path: name the values of `column` that are not among the webapp's choices."""
    cur.execute(s.q(s.VALUES_OUTSIDE, c=sql.Identifier(column), a=acteurs), (list(allowed),))
    values = ", ".join(f"{v!r} x{n}" for v, n in cur.fetchall())
    return f"{count} values of {column} are not among the webapp's choices {list(allowed)}: {values}"


def _unknown_codes(cur: psycopg.Cursor, column: str, raw: sql.Composable, ref: str) -> str:
    """Rare path: name the unknown codes of `column` with their counts."""
    cur.execute(s.q(s.UNKNOWN_CODES, c=sql.Identifier(column), raw=raw, ref=sql.Identifier(ref)))
    return f"unknown {column}: " + ", ".join(f"{v!r} x{n}" for v, n in cur.fetchall())
