"""COPY text format writer of the normalised run files: output PostgreSQL reads back unchanged."""

from __future__ import annotations

import psycopg
from qfdmo.carte_db.checks import length_limits
from qfdmo.carte_db.contract import load_contract
from qfdmo.carte_db.staging_format import (
    ACTEUR_COLUMNS,
    ACTEUR_FIELDS,
    FILES,
    MANAGED_COLUMNS,
    NULL,
    TsvWriter,
    escape,
    format_row,
)

TRICKY = [
    ("plain", 1, 2.5, True),
    ("tab\there", -3, None, False),
    ("back\\slash \\N", 0, 48.8566, None),
    ("new\nline and\r\ncrlf", 10**12, -0.000001, True),
    ("", None, None, None),
    ("\\", 7, 1e-7, False),
    ("soh \x01 inside", 8, 1.0, True),
    ("\x01", 9, 2.0, True),
    ("nul\x00dropped", 11, 3.0, False),
    ("accents é « » ’ 😀", 12, 4.0, None),
]


def test_format_row_escapes_like_copy_text():
    assert format_row(("a\tb", None, True, False, 1, 2.5, "c\\d\ne\rf")) == "a\\tb\t\\N\tt\tf\t1\t2.5\tc\\\\d\\ne\\rf\n"
    assert escape("x\ty") == "x\\ty" and NULL == "\\N"
    # Slow path (a value holds one of the fast path's markers) gives the same escaping.
    assert format_row(("\x01", "a\tb")) == "\x01\ta\\tb\n"
    assert format_row(("a\x00b", None)) == "ab\t\\N\n"


def test_column_contract():
    assert ACTEUR_COLUMNS[:5] == ("row_number", "identifiant_unique", "identifiant_externe", "source_code",
                                  "acteur_type_code")
    assert ACTEUR_COLUMNS[-3:] == ("lieu_prestation", "latitude", "longitude")
    assert len(ACTEUR_COLUMNS) == 27
    assert set(FILES) == {"acteurs.tsv", "propositions.tsv", "labels.tsv", "acteur_services.tsv"}


def test_postgresql_reads_back_what_was_written(carte_dsn, tmp_path):
    path = tmp_path / "rows.tsv"
    with TsvWriter(path) as writer:
        for row in TRICKY:
            writer.write_row(row)
    assert writer.rows == len(TRICKY)
    with psycopg.connect(carte_dsn) as conn:
        conn.execute("CREATE TEMPORARY TABLE t (n serial, s text, i bigint, f double precision, b boolean)")
        with conn.cursor().copy("COPY t (s, i, f, b) FROM STDIN") as copy:
            copy.write(path.read_bytes())
        back = conn.execute("SELECT s, i, f, b FROM t ORDER BY n").fetchall()
    expected = [(s.replace("\x00", ""), i, f, b) for s, i, f, b in TRICKY]
    assert back == expected


def test_managed_columns_derive_from_the_one_column_declaration():
    acteur = load_contract()["qfdmo_acteur"].columns
    stored = {c.name for c in ACTEUR_FIELDS if c.kind in ("text", "bool")}
    stored |= {c.stored_as for c in ACTEUR_FIELDS if c.stored_as}
    assert set(MANAGED_COLUMNS) == stored and len(MANAGED_COLUMNS) == len(stored)
    assert set(MANAGED_COLUMNS) <= set(acteur)
    # Columns the feed does not carry are left to the webapp.
    assert not {"nom_officiel", "naf_principal", "commentaires", "statut", "cree_le"} & set(MANAGED_COLUMNS)
    # Length limits come from the webapp's contract, for the limited text columns only.
    limits = dict(length_limits())
    assert limits["code_postal"] == 10 and limits["url"] == 2048 and "description" not in limits
    assert "horaires_osm" not in limits  # varchar without a limit
