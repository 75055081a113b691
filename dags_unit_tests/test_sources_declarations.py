"""Source declarations and product mappings: load, validate, check against the carte reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from qfdmo.carte_db.reference import reference_codes_from_files
from qfdmo.sources import (
    ConfigurationError,
    DeclarationError,
    MappingError,
    check_configuration,
    load_declarations,
    load_mapping,
)
from qfdmo.sources.declaration import DECLARATIONS_DIR, MAPPINGS_DIR, _load
from qfdmo.sources.mapping import parse_mapping

# The sources whose specifics are checked below; a new source is one more YAML file, no edit here.
EXPECTED = {
    "aliapur", "corepile", "ecodds", "ecologic", "ecomaison", "ecosystem", "ocab", "ocad3e", "pyreo", "refashion",
    "soren", "valdelia", "batribox", "citeo", "cyclevia", "ecopae", "cma_reparacteur", "ademesinoedecheteries",
}


def test_every_declaration_file_is_one_source_dag():
    declarations = load_declarations()
    files = {path.stem for path in DECLARATIONS_DIR.iterdir() if path.suffix in (".yaml", ".yml")}
    assert set(declarations) == files
    assert EXPECTED <= files
    assert {d.dag_id for d in declarations.values()} == {f"source_{code}" for code in files}


def test_declarations_are_cached():
    # Their parse time is measured by bench/local_stack.py (DAG file budget), not asserted here.
    _load.cache_clear()
    load_declarations(DECLARATIONS_DIR)
    assert load_declarations()["refashion"] is load_declarations()["refashion"]


def test_per_source_specifics():
    d = load_declarations()
    pointsapport = "https://data.pointsapport.ademe.fr/data-fair/api/v1/datasets/donnees-eo-{}/lines?size=10000"
    for code in EXPECTED - {"batribox", "cma_reparacteur", "ademesinoedecheteries"}:
        assert d[code].format == "pointsapport"
        assert d[code].feed_url == pointsapport.format(code)
    assert d["batribox"].feed_url.startswith("https://data.ademe.fr/data-fair/api/v1/datasets/donnees-eo-batribox/")
    assert d["ecologic"].product_mapping == d["ecosystem"].product_mapping == "sous_categories_3eee"
    assert d["ocad3e"].product_mapping == "sous_categories_qualirepar"
    assert d["refashion"].product_mapping == "sous_categories"
    assert d["refashion"].label_bonus_reparation == "refashion"
    assert d["ocad3e"].label_bonus_reparation == "qualirepar"
    assert d["ecomaison"].label_bonus_reparation == "ecomaison"
    assert d["ecosystem"].ignore_siret and not d["ecologic"].ignore_siret
    assert d["citeo"].returnable_objects and not d["refashion"].returnable_objects
    assert d["ocab"].source_code is None and d["ocab"].source_code_column == "ecoorganisme"
    assert d["ocab"].source_codes == ("ocab_valobat", "ocab_ecomaison", "ocab_valdelia", "ocab_ecominero")
    assert d["refashion"].source_codes == ("refashion",)
    cma = d["cma_reparacteur"]
    assert cma.format == "artisanat" and cma.product_mapping == "sous_categories_cma"
    assert cma.feed_url == "https://data.artisanat.fr/api/explore/v2.1/catalog/datasets/reparacteurs/records"
    assert (cma.defaults.acteur_type, cma.defaults.labels, cma.defaults.actions, cma.defaults.public_accueilli) == (
        "artisan", ("reparacteur",), ("reparer",), "Particuliers")
    sinoe = d["ademesinoedecheteries"]
    assert sinoe.format == "sinoe" and sinoe.product_mapping == "sous_categories_sinoe"
    assert "ANNEE_eq=2024" in sinoe.feed_url and sinoe.nomenclature_url
    assert (sinoe.defaults.acteur_type, sinoe.defaults.actions) == ("decheterie", ("trier",))


def test_every_declaration_matches_the_reference():
    reference = reference_codes_from_files()
    for declaration in load_declarations().values():
        check_configuration(declaration, reference)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


VALID = """\
code: {code}
libelle: Exemple
format: pointsapport
feed_url: https://example.org/lines
product_mapping: sous_categories
source_code: {code}
"""


def test_invalid_declaration_names_file_and_field(tmp_path):
    _write(tmp_path, "exemple.yaml", VALID.format(code="exemple").replace("format: pointsapport", "format: csv"))
    with pytest.raises(DeclarationError, match=r"exemple\.yaml: field 'format'"):
        load_declarations(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    (("source_code: exemple", ""), "set exactly one of source_code or source_code_column"),
    (("product_mapping: sous_categories", "product_mapping: inconnu"), "no file mappings/inconnu.csv"),
    (("libelle: Exemple", "libelle: Exemple\ncolonne_inconnue: 1"), "field 'colonne_inconnue'"),
    (("code: exemple", "code: autre"), "must equal the file name"),
    (("feed_url: https://example.org/lines", "feed_url: ftp://x"), "field 'feed_url'"),
    (("format: pointsapport", "format: sinoe"), "nomenclature_url is required"),
])
def test_declaration_errors(tmp_path, change, message):
    path = _write(tmp_path, "exemple.yaml", VALID.format(code="exemple").replace(*change))
    with pytest.raises(DeclarationError, match=message) as error:
        load_declarations(tmp_path)
    assert path.name in str(error.value)


def test_yaml_syntax_error(tmp_path):
    _write(tmp_path, "casse.yaml", "code: [casse\n")
    with pytest.raises(DeclarationError, match="casse.yaml: cannot read YAML"):
        load_declarations(tmp_path)


def test_adding_a_source_is_adding_a_file(tmp_path):
    _write(tmp_path, "nouvelle.yaml", VALID.format(code="nouvelle"))
    assert load_declarations(tmp_path)["nouvelle"].dag_id == "source_nouvelle"


def test_configuration_error_before_reading_rows():
    reference = reference_codes_from_files()
    refashion = load_declarations()["refashion"]
    smaller = type(reference)(**{**reference.__dict__, "sous_categories": reference.sous_categories - {"vetement"}})
    with pytest.raises(ConfigurationError, match="vetement"):
        check_configuration(refashion, smaller)
    unknown_source = refashion.model_copy(update={"source_code": "pas_une_source"})
    with pytest.raises(ConfigurationError, match="pas_une_source"):
        check_configuration(unknown_source, reference)


# --- mappings ---------------------------------------------------------------------------------

def test_mapping_files_target_reference_codes():
    reference = reference_codes_from_files()
    for path in MAPPINGS_DIR.glob("*.csv"):
        load_mapping(path.stem).check_codes(reference.sous_categories)


@pytest.mark.parametrize(("name", "label", "codes"), [
    ("sous_categories", "Vêtement", ("vetement",)),
    ("sous_categories", "  LINGE ", ("linge_de_maison",)),
    ("sous_categories", "écrans", ("ecran",)),
    ("sous_categories", "Ecrans", ("ecran",)),
    ("sous_categories", "GEM hors froid", ("gros_electromenager_hors_refrigerant",)),
    ("sous_categories", "Matériels de bricolage, dont l'outillage à main", ("outil_de_bricolage_et_jardinage",)),
    ("sous_categories", "Materiels de bricolage, dont l’outillage a main", ("outil_de_bricolage_et_jardinage",)),
    ("sous_categories_3eee", "PAM (petits appareils ménagers)", (
        "petit_electromenager", "materiel_hifi_et_video", "materiel_photo_et_cinema", "autre_equipement_electronique",
        "smartphone_tablette_et_console", "luminaire")),
    ("sous_categories_3eee", "GEP froid", ()),
    ("sous_categories_cma", "Autres", ()),
    ("sous_categories_sinoe", "Déchets textiles", ("vetement", "linge_de_maison")),
    ("sous_categories", "Objet inconnu", None),
])
def test_mapping_lookup(name, label, codes):
    assert load_mapping(name).lookup(label) == codes


def test_mapping_format_errors(tmp_path):
    bad = _write(tmp_path, "bad.csv", "label,code\nx,y\n")
    with pytest.raises(MappingError, match="header"):
        parse_mapping(bad)
    bad = _write(tmp_path, "bad2.csv", "partner_label,sous_categorie_code\nx,y,z\n")
    with pytest.raises(MappingError, match="bad2.csv:2"):
        parse_mapping(bad)
    mapping = parse_mapping(_write(tmp_path, "ok.csv", "partner_label,sous_categorie_code\nx,zzz\n"))
    with pytest.raises(MappingError, match="zzz"):
        mapping.check_codes({"vetement"})
