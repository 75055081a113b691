"""The format registry: a format is one module of qfdmo/sources/formats/, found by the declaration
validation, the normaliser and the download step; and the report's JSON form reads back."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from pathlib import Path

import pytest
from qfdmo.carte_db.reference import reference_codes_from_files
from qfdmo.sources import NormalisationReport, load_declarations, normalise
from qfdmo.sources import formats as formats_package
from qfdmo.sources.declaration import DeclarationError, parse_declaration
from qfdmo.sources.formats import FeedFormat, UnknownFormatError, feed_format, format_names

DAGS = Path(__file__).resolve().parent.parent / "dags"

ANNUAIRE = '''
"""A test format: one flat record per point, French column names of its own."""

from qfdmo.feeds.readers import read_datafair
from qfdmo.sources.formats import FeedFormat, Rejected


def adapter(context, report):
    def adapt(record):
        if not record.get("ref"):
            raise Rejected("missing identifiant", record.get("ref"))
        return {
            "id_point_apport_ou_reparation": record["ref"],
            "nom_de_lorganisme": record.get("raison_sociale"),
            "type_de_point_de_collecte": "Artisan, commerce indépendant",
            "point_de_reparation": True,
            "produitsdechets_acceptes": record.get("objets"),
            "public_accueilli": "Particuliers",
            "adresse": record.get("voie"),
            "code_postal": record.get("cp"),
            "ville": record.get("commune"),
            "latitudewgs84": record.get("lat"),
            "longitudewgs84": record.get("lon"),
        }

    return adapt


FORMAT = FeedFormat(name="annuaire", read=read_datafair, identifier_fields=("ref", "raison_sociale"), adapter=adapter)
'''

DECLARATION = """\
code: exemple
libelle: Exemple
format: annuaire
feed_url: https://example.org/data-fair/api/v1/datasets/annuaire/lines
product_mapping: sous_categories
source_code: exemple
"""


@pytest.fixture
def annuaire_format(tmp_path, monkeypatch):
    """The module of a new format, dropped beside the others (a folder on the package's path)."""
    (tmp_path / "annuaire.py").write_text(textwrap.dedent(ANNUAIRE), encoding="utf-8")
    monkeypatch.setattr(formats_package, "__path__", [*formats_package.__path__, str(tmp_path)])
    formats_package._formats.cache_clear()
    yield tmp_path
    sys.modules.pop("qfdmo.sources.formats.annuaire", None)
    formats_package._formats.cache_clear()


def test_every_declared_format_is_a_module_of_the_registry():
    assert format_names() == ("artisanat", "pointsapport", "sinoe")
    assert {d.format for d in load_declarations().values()} <= set(format_names())
    for name in format_names():
        assert isinstance(feed_format(name), FeedFormat) and feed_format(name).name == name
    with pytest.raises(UnknownFormatError, match="unknown format 'csv' .known: artisanat, pointsapport, sinoe"):
        feed_format("csv")


def test_no_code_outside_the_formats_names_a_format():
    for path in DAGS.rglob("*.py"):
        if formats_package.__name__.replace(".", "/") in path.as_posix():
            continue
        text = path.read_text(encoding="utf-8")
        assert not [name for name in format_names() if f'"{name}"' in text], path


def test_a_new_format_is_one_module(annuaire_format, tmp_path):
    path = tmp_path / "exemple.yaml"
    path.write_text(DECLARATION, encoding="utf-8")
    declaration = parse_declaration(path)
    reference = reference_codes_from_files()
    reference = dataclasses.replace(reference, sources=reference.sources | {"exemple"})
    rows = [
        {"ref": "A1", "raison_sociale": "Cordonnerie Exemple", "objets": "Chaussure", "voie": "3 rue Haute",
         "cp": "6000", "commune": "NICE", "lat": 43.7, "lon": 7.26},
        {"ref": "", "raison_sociale": "Sans identifiant"},
    ]
    report = normalise(declaration, rows, reference, tmp_path / "run")
    assert (report.acteurs_written, dict(report.rejections)) == (1, {"missing identifiant": 1})
    assert report.rejection_examples["missing identifiant"][0]["identifier"] == "Sans identifiant"
    line = (tmp_path / "run" / "acteurs.tsv").read_text(encoding="utf-8").split("\t")
    assert line[1:4] == ["exemple_A1", "A1", "exemple"] and "06000" in line and "Nice" in line


def test_an_unknown_format_is_refused_with_the_known_ones(tmp_path):
    path = tmp_path / "exemple.yaml"
    path.write_text(DECLARATION, encoding="utf-8")
    with pytest.raises(DeclarationError, match=r"field 'format'.*unknown format 'annuaire'"):
        parse_declaration(path)


def test_the_report_reads_back_from_its_json_form(tmp_path):
    declaration = load_declarations()["refashion"]
    rows = [{"nom_de_lorganisme": ""}, {"nom_de_lorganisme": "X", "type_de_point_de_collecte": "Inconnu"}]
    report = normalise(declaration, rows, reference_codes_from_files(), tmp_path)
    data = report.to_dict()
    assert data["rejections"] == {"missing nom": 1, "unknown acteur type": 1}
    back = NormalisationReport.from_dict({**data, "skipped": False})
    assert back.to_dict() == data and back.rejection_examples["missing nom"][0]["row"] == 1
