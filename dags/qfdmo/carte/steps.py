"""The compute_acteurs steps, as plain functions of a DSN (the DAG only wires them): each returns
a small dict for XCom and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from qfdmo.carte.dbt_runner import build
from qfdmo.carte.report import build_statistics
from qfdmo.carte.swap import DEFAULT_MAX_DROP_SHARE, guard_check, swap
from qfdmo.pipeline.paths import data_dir


def dbt_scratch() -> Path:
    """dbt's target/ (partial-parse cache included) and logs/: `$QFDMO_DATA_DIR/carte_dbt/`."""
    return data_dir() / "carte_dbt"


# What the swap does not read: the open data is built by export_opendata (weekly), its own DAG.
COMPUTE_EXCLUDES = ("opendata_acteur",)


def build_models(dsn: str, max_drop_share: float = DEFAULT_MAX_DROP_SHARE) -> dict[str, Any]:
    """`dbt build` of the models the swap reads and their tests (raises DbtBuildError), then the
    guard's verdict."""
    summary = build(dsn, dbt_scratch(), exclude=COMPUTE_EXCLUDES).summary()
    with psycopg.connect(dsn) as conn:
        summary["guard"] = guard_check(conn, max_drop_share)
    summary["guard_markdown"] = guard_markdown(summary["guard"])
    return summary


def swap_tables(dsn: str, max_drop_share: float = DEFAULT_MAX_DROP_SHARE, approved: bool = False) -> dict[str, Any]:
    return swap(dsn, max_drop_share=max_drop_share, force=approved).as_dict()


def statistics(dsn: str) -> dict[str, Any] | None:
    try:
        with psycopg.connect(dsn) as conn:
            return build_statistics(conn)
    except psycopg.Error:
        return None  # models never built: the report says so by their absence


def guard_markdown(guard: dict[str, Any]) -> str:
    return (
        f"The carte would show **{guard['displayed_new']}** acteurs instead of **{guard['displayed_current']}** "
        f"(drop {guard['drop_share']:.1%}, threshold {guard['max_drop_share']:.1%}).\n\n"
        "Approve to replace qfdmo_displayed* and qfdmo_vue* with the new computation; Reject (or no answer "
        "before the timeout) keeps the current tables. The models are in schema qfdmo_carte for inspection."
    )
