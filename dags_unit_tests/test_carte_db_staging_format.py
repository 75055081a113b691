"""The run files' format and their one writer (run_files.RunFileWriter): what PostgreSQL reads back
is what was written, whatever the values hold."""

from __future__ import annotations

import psycopg
from qfdmo.carte_db.checks import length_limits
from qfdmo.carte_db.contract import load_contract
from qfdmo.carte_db.run_files import NULL, Links, RunFileWriter, copy_text, escape
from qfdmo.carte_db.staging_format import (
    ACTEUR_COLUMNS,
    ACTEUR_FIELDS,
    ACTEURS_FILE,
    FILES,
    LABELS_FILE,
    MANAGED_COLUMNS,
    PROPOSITIONS_FILE,
)

# (nom, row_number, latitude, uniquement_sur_rdv)
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
_TYPES = {"row_number": "bigint", "latitude": "double precision", "uniquement_sur_rdv": "boolean"}


def _acteur(identifiant: str, nom: object, row_number: object, latitude: object, rdv: object) -> list[object]:
    values = {"identifiant_unique": identifiant, "nom": nom, "row_number": row_number, "latitude": latitude,
              "uniquement_sur_rdv": rdv}
    return [values.get(c, "") for c in ACTEUR_COLUMNS]


def test_values_become_copy_text():
    assert escape("a\tb\\c\nd\re\x00f") == "a\\tb\\\\c\\nd\\re" + "f" and NULL == "\\N"
    assert [copy_text(v) for v in ("x", None, True, False, 3, 2.5)] == ["x", NULL, "t", "f", "3", "2.5"]


def test_lines_are_escaped_only_when_needed(tmp_path):
    with RunFileWriter(tmp_path) as out:
        out.write_values(_acteur("s_1", "plain", 1, 2.5, None), Links([("trier", "vetement")], ["ess"]))
        out.write_values(_acteur("s\t2", "a\\b", 2, None, True), Links([("trier", "vetement"), ("reparer", "a\tb")]))
    acteurs = (tmp_path / ACTEURS_FILE).read_text(encoding="utf-8").splitlines()
    assert acteurs[0].split("\t")[:2] == ["1", "s_1"] and acteurs[0].count(NULL) == 1
    assert acteurs[1].split("\t")[:2] == ["2", "s\\t2"] and "a\\\\b" in acteurs[1]
    assert (tmp_path / PROPOSITIONS_FILE).read_text(encoding="utf-8") == (
        "s_1\ttrier\tvetement\ns\\t2\ttrier\tvetement\ns\\t2\treparer\ta\\tb\n")
    assert (tmp_path / LABELS_FILE).read_text(encoding="utf-8") == "s_1\tess\n"
    assert (out.acteurs, out.propositions, out.labels, out.acteur_services) == (2, 3, 1, 0)


def test_text_lines_and_any_values_give_the_same_files(tmp_path):
    """write() (the normaliser's one-line text) and write_values() (anything) write the same bytes."""
    links = Links([("trier", "vetement")], ["ess"], ["structure_de_collecte"])
    text = ["back\\slash", "new\nline", "cr\r", "nul\x00", "plain é", NULL]
    for name, write in (("text", RunFileWriter.write), ("values", RunFileWriter.write_values)):
        with RunFileWriter(tmp_path / name) as out:
            for n, nom in enumerate(text):
                write(out, [copy_text(v) for v in _acteur(f"s_{n}\\", nom, n, 1.5, n % 2 == 0)], links)
    for name in FILES:
        assert (tmp_path / "text" / name).read_bytes() == (tmp_path / "values" / name).read_bytes()
    assert (tmp_path / "text" / ACTEURS_FILE).read_text(encoding="utf-8").count("\n") == len(text)


def test_column_contract():
    assert ACTEUR_COLUMNS[:5] == ("row_number", "identifiant_unique", "identifiant_externe", "source_code",
                                  "acteur_type_code")
    assert ACTEUR_COLUMNS[-3:] == ("lieu_prestation", "latitude", "longitude")
    assert len(ACTEUR_COLUMNS) == 27
    assert set(FILES) == {"acteurs.tsv", "propositions.tsv", "labels.tsv", "acteur_services.tsv"}


def test_postgresql_reads_back_what_was_written(carte_dsn, tmp_path):
    with RunFileWriter(tmp_path) as out:
        for n, (nom, row_number, latitude, rdv) in enumerate(TRICKY):
            out.write_values(_acteur(f"id\t{n}\\", nom, row_number, latitude, rdv), Links(labels=[f"label {nom}"]))
    columns = ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in ACTEUR_COLUMNS)
    with psycopg.connect(carte_dsn) as conn:
        conn.execute(f"CREATE TEMPORARY TABLE a (n serial, {columns})")
        conn.execute("CREATE TEMPORARY TABLE l (n serial, identifiant_unique text, label_code text)")
        for table, name, names in (("a", ACTEURS_FILE, ACTEUR_COLUMNS), ("l", LABELS_FILE, FILES[LABELS_FILE])):
            with conn.cursor().copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
                copy.write((tmp_path / name).read_bytes())
        back = conn.execute("SELECT identifiant_unique, nom, row_number, latitude, uniquement_sur_rdv FROM a"
                            " ORDER BY n").fetchall()
        labels = conn.execute("SELECT identifiant_unique, label_code FROM l ORDER BY n").fetchall()
    assert back == [(f"id\t{n}\\", nom.replace("\x00", ""), i, f, b) for n, (nom, i, f, b) in enumerate(TRICKY)]
    assert labels == [(f"id\t{n}\\", f"label {nom}".replace("\x00", "")) for n, (nom, *_) in enumerate(TRICKY)]


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
