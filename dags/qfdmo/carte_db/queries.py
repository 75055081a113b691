"""Small helpers shared by the modules that query the carte database."""

from __future__ import annotations

from typing import Any

import psycopg


def one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (a count, an aggregate, a function call).

    psycopg types fetchone() as optional; a missing row here is a bug, said as such.
    """
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("a query that always returns one row returned none")
    return tuple(row)
