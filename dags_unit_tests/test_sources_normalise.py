"""normalise(): raw feed rows → the four COPY files, rejections and the report."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from qfdmo.carte_db.reference import reference_codes_from_files
from qfdmo.carte_db.staging_format import ACTEUR_COLUMNS
from qfdmo.sources import ConfigurationError, NormalisationContext, load_declarations, normalise, rules

REFERENCE = reference_codes_from_files()
DECLARATIONS = load_declarations()

_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def read_copy(path: Path) -> list[list[str | None]]:
    """Parse a PostgreSQL COPY text file the way the server does."""
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    rows = []
    for line in text.splitlines():
        fields = line.split("\t")
        rows.append([None if f == "\\N" else _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), f)
                     for f in fields])
    return rows


class Run:
    def __init__(self, run_dir: Path, report: Any) -> None:
        self.report = report
        self.acteurs = [dict(zip(ACTEUR_COLUMNS, row, strict=True)) for row in read_copy(run_dir / "acteurs.tsv")]
        self.propositions = [tuple(r) for r in read_copy(run_dir / "propositions.tsv")]
        self.labels = [tuple(r) for r in read_copy(run_dir / "labels.tsv")]
        self.services = [tuple(r) for r in read_copy(run_dir / "acteur_services.tsv")]

    def acteur(self, identifiant_unique: str) -> dict[str, str | None]:
        (found,) = [a for a in self.acteurs if a["identifiant_unique"] == identifiant_unique]
        return found

    def propositions_of(self, identifiant_unique: str) -> set[tuple[str, str]]:
        return {(a, s) for i, a, s in self.propositions if i == identifiant_unique}

    def labels_of(self, identifiant_unique: str) -> set[str]:
        return {label for i, label in self.labels if i == identifiant_unique}

    def services_of(self, identifiant_unique: str) -> set[str]:
        return {s for i, s in self.services if i == identifiant_unique}


@pytest.fixture
def run(tmp_path):
    counter = iter(range(1000))

    def _run(code: str, rows: list[Any], context: NormalisationContext | None = None) -> Run:
        run_dir = tmp_path / f"run{next(counter)}"
        report = normalise(DECLARATIONS[code], rows, REFERENCE, run_dir, context)
        json.dumps(report.to_dict())  # the report is an artefact: it must serialise
        return Run(run_dir, report)

    return _run


def eo_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id_point_apport_ou_reparation": "PAV-000123",
        "nom_de_lorganisme": "Association Exemple Réemploi",
        "enseigne_commerciale": "Boutique Exemple",
        "ecoorganisme": "REFASHION",
        "type_de_point_de_collecte": "Artisan, commerce indépendant",
        "adresse_format_ban": "12 Rue de l'Exemple 75011 Paris",
        "adresse_complement": "Bâtiment B",
        "latitudewgs84": "48,8566",
        "longitudewgs84": "2,3522,",
        "latitudemercator": "",
        "longitudemercator": "",
        "siret": 1234567890001.0,
        "telephone": "01 23 45 67 89",
        "email": "Contact@Example.org ",
        "site_web": "www.example.org",
        "horaires_douverture": "Mo-Fr 09h-12h30",
        "consignes_dacces": "Sonner à l'interphone",
        "produitsdechets_acceptes": "Vêtement|Linge|Chaussure",
        "labels_etou_bonus": "Agréé Bonus Réparation",
        "public_accueilli": "Particuliers et professionnels",
        "reprise": "oui",
        "exclusivite_de_reprisereparation": "non",
        "uniquement_sur_rdv": "Oui ",
        "point_de_reparation": True,
        "point_dapport_de_service_reparation": False,
        "point_dapport_pour_reemploi": "oui",
        "point_de_collecte_ou_de_reprise_des_dechets": "non",
        "service_a_domicile": "non",
        "perimetre_dintervention": "",
        "filiere": "Textiles",
        "_i": 1532,
        "_id": "aB3dE5fG7hJ9kL1mN2pQ4",
        "_score": None,
        "_geopoint": "48.8566,2.3522",
    }
    row.update(overrides)
    return row


def test_full_points_dapport_row(run):
    r = run("refashion", [eo_row()])
    assert r.report.rows_read == r.report.rows_written == r.report.acteurs_written == 1
    assert r.acteur("refashion_PAV-000123") == {
        "row_number": "1",
        "identifiant_unique": "refashion_PAV-000123",
        "identifiant_externe": "PAV-000123",
        "source_code": "refashion",
        "acteur_type_code": "artisan",
        "nom": "Association Exemple Réemploi",
        "nom_commercial": "Boutique Exemple",
        "adresse": "12 Rue de l'Exemple",
        "adresse_complement": "Bâtiment B",
        "code_postal": "75011",
        "ville": "Paris",
        "url": "https://www.example.org",
        "email": "contact@example.org",
        "telephone": "0123456789",
        "siret": "01234567890001",
        "siren": "012345678",
        "description": "",
        "horaires_osm": "Mo-Fr 09:00-12:30",
        "horaires_description": "",
        "consignes_dacces": "Sonner à l'interphone",
        "public_accueilli": "Particuliers et professionnels",
        "reprise": "1 pour 1",
        "exclusivite_de_reprisereparation": "f",
        "uniquement_sur_rdv": "t",
        "lieu_prestation": "SUR_PLACE",
        "latitude": "48.8566",
        "longitude": "2.3522",
    }
    codes = {"vetement", "linge_de_maison", "chaussures"}
    assert r.propositions_of("refashion_PAV-000123") == {(a, c) for a in ("reparer", "donner") for c in codes}
    assert r.labels_of("refashion_PAV-000123") == {"refashion"}
    assert r.services_of("refashion_PAV-000123") == {"service_de_reparation", "structure_de_collecte"}
    assert r.report.rejections == {} and r.report.warnings == {}


def test_text_columns_are_empty_never_null(run):
    r = run("refashion", [eo_row(enseigne_commerciale=None, adresse_complement="null", email="n/a", site_web="-",
                                 exclusivite_de_reprisereparation="", uniquement_sur_rdv=None)])
    acteur = r.acteurs[0]
    assert acteur["nom_commercial"] == acteur["adresse_complement"] == acteur["email"] == acteur["url"] == ""
    assert acteur["exclusivite_de_reprisereparation"] is None and acteur["uniquement_sur_rdv"] is None
    nullable = {"exclusivite_de_reprisereparation", "uniquement_sur_rdv", "latitude", "longitude"}
    assert all(v is not None for k, v in acteur.items() if k not in nullable)


def test_digital_acteur_gets_d_suffix_and_needs_no_location(run):
    r = run("refashion", [eo_row(type_de_point_de_collecte="Solution en ligne (site web, app. mobile)",
                                 latitudewgs84="", longitudewgs84=None, adresse_format_ban="")])
    acteur = r.acteur("refashion_PAV-000123_d")
    assert acteur["identifiant_externe"] == "PAV-000123_d"
    assert acteur["acteur_type_code"] == "acteur_digital"
    assert acteur["latitude"] is None and acteur["longitude"] is None


@pytest.mark.parametrize(("lat", "lon"), [("", ""), (0, 0), ("0", "2.35"), (None, None), ("abc", "2.3")])
def test_physical_acteur_without_location_is_rejected(run, lat, lon):
    r = run("refashion", [eo_row(latitudewgs84=lat, longitudewgs84=lon)])
    assert r.acteurs == [] and r.report.rows_rejected == 1
    assert r.report.rejections == {"missing location": 1}
    assert r.report.rejection_examples["missing location"][0]["identifier"] == "PAV-000123"


def test_identifiant_externe_from_nom_and_identifiant_unique_cleaning(run):
    r = run("ecodds", [eo_row(id_point_apport_ou_reparation="", nom_de_lorganisme=" Garage - Exemple  Auto "),
                       eo_row(id_point_apport_ou_reparation="AB/12 34")])
    assert {a["identifiant_unique"] for a in r.acteurs} == {"ecodds_Garage_Exemple_Auto", "ecodds_AB-1234"}
    assert {a["identifiant_externe"] for a in r.acteurs} == {"Garage_Exemple_Auto", "AB/12 34"}


def test_unknown_acteur_type_rejects_row_and_is_reported(run):
    rows = [eo_row(type_de_point_de_collecte="Vendeur de glaces", id_point_apport_ou_reparation=str(i))
            for i in range(3)] + [eo_row(type_de_point_de_collecte="Point d’apport volontaire Publique")]
    r = run("refashion", rows)
    assert r.report.rejections == {"unknown acteur type": 3}
    assert r.report.unknown_values["acteur_type"] == {"Vendeur de glaces": 3}
    assert [a["acteur_type_code"] for a in r.acteurs] == ["pav_public"]


def test_unknown_products_are_reported_and_rows_without_sous_categorie_rejected(run):
    rows = [
        eo_row(id_point_apport_ou_reparation="1", produitsdechets_acceptes="Vêtement|Objet mystère"),
        eo_row(id_point_apport_ou_reparation="2", produitsdechets_acceptes="Objet mystère"),
        eo_row(id_point_apport_ou_reparation="3", produitsdechets_acceptes=""),
        eo_row(id_point_apport_ou_reparation="4", produitsdechets_acceptes=" VÊTEMENT | linge "),
    ]
    r = run("refashion", rows)
    assert r.report.unknown_values["product_label"] == {"Objet mystère": 2}
    assert r.report.rejections == {"no sous-categorie": 2}
    assert {a["identifiant_externe"] for a in r.acteurs} == {"1", "4"}
    assert r.propositions_of("refashion_1") == {("reparer", "vetement"), ("donner", "vetement")}


def test_labels(run):
    rows = [
        eo_row(id_point_apport_ou_reparation="1", labels_etou_bonus="Agréé Bonus Réparation|QualiRépar|inconnu"),
        eo_row(id_point_apport_ou_reparation="2", labels_etou_bonus="non applicable"),
        eo_row(id_point_apport_ou_reparation="3", labels_etou_bonus="N/A",
               type_de_point_de_collecte="Association, entreprise de l'économie sociale et solidaire (ESS)"),
        eo_row(id_point_apport_ou_reparation="4", labels_etou_bonus="BonusRepar_ASL"),
    ]
    r = run("refashion", rows)
    assert r.labels_of("refashion_1") == {"refashion", "qualirepar"}
    assert r.labels_of("refashion_2") == set()
    assert r.labels_of("refashion_3") == {"ess"}
    assert r.labels_of("refashion_4") == {"BonusRepar_ASL"}
    assert r.report.unknown_values["label"] == {"inconnu": 1}
    assert r.report.acteurs_written == 4  # unknown labels never reject a row
    ocad3e = run("ocad3e", [eo_row(produitsdechets_acceptes="TV")])
    assert ocad3e.labels_of("ocad3e_PAV-000123") == {"qualirepar"}


@pytest.mark.parametrize(("flags", "actions", "services"), [
    ((True, False, False, False), {"reparer"}, {"service_de_reparation"}),
    ((False, "oui", False, False), {"reparer"}, {"service_de_reparation"}),
    ((False, False, "oui", False), {"donner"}, {"structure_de_collecte"}),
    ((False, False, False, "yes"), {"trier"}, {"structure_de_collecte"}),
    (("true", "non", True, True), {"reparer", "donner", "trier"}, {"service_de_reparation", "structure_de_collecte"}),
])
def test_actions_and_services(run, flags, actions, services):
    r = run("refashion", [eo_row(point_de_reparation=flags[0], point_dapport_de_service_reparation=flags[1],
                                 point_dapport_pour_reemploi=flags[2],
                                 point_de_collecte_ou_de_reprise_des_dechets=flags[3])])
    assert {a for a, _ in r.propositions_of("refashion_PAV-000123")} == actions
    assert r.services_of("refashion_PAV-000123") == services
    # every action gets every sous-catégorie of the row
    assert len(r.propositions) == 3 * len(actions)


def test_row_without_action_is_rejected(run):
    r = run("refashion", [eo_row(point_de_reparation=False, point_dapport_pour_reemploi="non",
                                 point_de_collecte_ou_de_reprise_des_dechets=None)])
    assert r.report.rejections == {"no action": 1}


def test_returnable_objects_give_rapporter(run):
    r = run("citeo", [eo_row(produitsdechets_acceptes="Emballage verre réemployable", point_de_reparation=False)])
    assert r.propositions_of("citeo_PAV-000123") == {("rapporter", "emballage_reemployable")}


@pytest.mark.parametrize("public", ["Professionnels", "professionnels", "Aucun"])
def test_public_out_of_scope_is_rejected_with_reason(run, public):
    r = run("refashion", [eo_row(public_accueilli=public)])
    expected = "Aucun" if public == "Aucun" else "Professionnels"
    assert r.report.rejections == {f"out of scope: public {expected}": 1}


def test_unknown_public_is_blank_with_warning(run):
    r = run("refashion", [eo_row(public_accueilli="Tout public")])
    assert r.acteurs[0]["public_accueilli"] == ""
    assert r.report.warnings == {"invalid_public_accueilli": 1}


def test_home_service_only_is_kept_with_lieu_prestation(run):
    r = run("refashion", [eo_row(id_point_apport_ou_reparation="1", service_a_domicile="Service à domicile uniquement"),
                          eo_row(id_point_apport_ou_reparation="2", service_a_domicile="oui")])
    assert [a["lieu_prestation"] for a in r.acteurs] == ["A_DOMICILE", "SUR_PLACE_OU_A_DOMICILE"]


def test_warnings_blank_invalid_values(run):
    r = run("refashion", [eo_row(email="pas un email", horaires_douverture="lundi au vendredi", siret="123",
                                 reprise="parfois", uniquement_sur_rdv="peut-être", site_web="pas une url",
                                 adresse_format_ban="Lieu-dit Sans Code")])
    acteur = r.acteurs[0]
    assert (acteur["email"], acteur["horaires_osm"], acteur["siret"], acteur["reprise"], acteur["url"]) == (
        "", "", "", "", "")
    assert acteur["uniquement_sur_rdv"] is None
    assert (acteur["adresse"], acteur["code_postal"], acteur["ville"]) == ("Lieu-dit Sans Code", "", "")
    assert r.report.warnings == {"invalid_email": 1, "invalid_horaires_osm": 1, "invalid_siret": 1,
                                 "invalid_reprise": 1, "invalid_boolean": 1, "invalid_url": 1,
                                 "unparsed_address": 1}


def test_ecosystem_ignores_siret(run):
    r = run("ecosystem", [eo_row(produitsdechets_acceptes="GEM hors froid")])
    assert r.acteurs[0]["siret"] == r.acteurs[0]["siren"] == ""
    assert len(r.propositions_of("ecosystem_PAV-000123")) == 2 * 4  # 3EEE "gem hors froid" → 4 codes


def test_duplicate_rows_are_all_written_and_counted(run):
    rows = [eo_row(produitsdechets_acceptes="Vêtement"), eo_row(produitsdechets_acceptes="Chaussure"),
            eo_row(id_point_apport_ou_reparation="autre")]
    r = run("ecomaison", [dict(row, produitsdechets_acceptes="Meubles") for row in rows[:1]] + rows[1:])
    assert r.report.duplicates == 1
    assert [a["row_number"] for a in r.acteurs] == ["1", "2", "3"]


def test_ocab_one_acteur_per_eco_organisme(run):
    rows = [eo_row(ecoorganisme="VALOBAT|ECOMAISON"),
            eo_row(id_point_apport_ou_reparation="2", ecoorganisme=" Valdelia "),
            eo_row(id_point_apport_ou_reparation="3", ecoorganisme="INCONNU"),
            eo_row(id_point_apport_ou_reparation="4", ecoorganisme="ECOMINERO|INCONNU"),
            eo_row(id_point_apport_ou_reparation="5", ecoorganisme="")]
    r = run("ocab", rows)
    assert {(a["identifiant_unique"], a["source_code"]) for a in r.acteurs} == {
        ("ocab_valobat_PAV-000123", "ocab_valobat"), ("ocab_ecomaison_PAV-000123", "ocab_ecomaison"),
        ("ocab_valdelia_2", "ocab_valdelia"), ("ocab_ecominero_4", "ocab_ecominero")}
    assert r.report.unknown_values["source"] == {"INCONNU": 2}
    assert r.report.rejections == {"unknown source": 3}
    assert r.report.rows_written == 3 and r.report.rows_rejected == 2
    assert r.report.duplicates == 0
    assert r.propositions_of("ocab_ecomaison_PAV-000123") == r.propositions_of("ocab_valobat_PAV-000123") != set()


def cma_row(**overrides: Any) -> dict[str, Any]:
    row = {"id": "CMA-42", "name": "Cordonnerie Exemple", "reparactor_description": "Ressemelage",
           "address_1": "3 place du Marché", "address_2": "", "zip_code": "6000", "zip_code_label": "NICE",
           "website": "cordonnerie-exemple.fr", "email": "Contact@Cordonnerie-Exemple.fr", "phone": "0493000000",
           "siret": "12345678900011", "latitude": 43.7, "longitude": 7.26, "is_enabled": 1, "other_info": "",
           "update_date": "2025-01-01", "reparactor_hours": "du mardi au samedi",
           "categorie": "Chaussures, maroquinerie", "categorie2": "Vêtements, textiles", "categorie3": None}
    row.update(overrides)
    return row


def test_cma_rows(run):
    rows = [cma_row(), cma_row(id=None), cma_row(id="CMA-43", is_enabled=0), cma_row(id="CMA-44", categorie="Autres",
                                                                                      categorie2=None)]
    r = run("cma_reparacteur", rows)
    assert r.report.rejections == {"missing identifiant": 1, "disabled": 1, "no sous-categorie": 1}
    acteur = r.acteur("cma_reparacteur_CMA-42")
    assert (acteur["acteur_type_code"], acteur["public_accueilli"], acteur["code_postal"], acteur["ville"]) == (
        "artisan", "Particuliers", "06000", "Nice")
    assert (acteur["description"], acteur["horaires_description"], acteur["url"]) == (
        "Ressemelage", "du mardi au samedi", "https://cordonnerie-exemple.fr")
    assert r.propositions_of("cma_reparacteur_CMA-42") == {
        ("reparer", c) for c in ("chaussures", "maroquinerie", "vetement", "linge_de_maison")}
    assert r.labels_of("cma_reparacteur_CMA-42") == {"reparacteur"}
    assert r.services_of("cma_reparacteur_CMA-42") == {"service_de_reparation"}


NOMENCLATURE = NormalisationContext(nomenclature={"01.1": "Déchets textiles", "07.6": "Cartons",
                                                  "09.9": "Déchets verts"})


def sinoe_row(**overrides: Any) -> dict[str, Any]:
    row = {"C_SERVICE": "12345", "N_SERVICE": "DECHETERIE DE EXEMPLEVILLE", "AD1_SITE": "Route de la Gare",
           "AD2_SITE": "ZA Nord", "CP_SITE": "38000", "L_VILLE_SITE": "EXEMPLEVILLE", "TEL_SERVICE": "04 76 00 00 00",
           "LST_TYPE_DECHET": "01.1|07.6|NP", "ORIGINE_DECHET_ACC": "DMA/PRO", "_geopoint": "45.18,5.72",
           "ANNEE": 2024, "GPS_X": 637000.0, "GPS_Y": 5650000.0}
    row.update(overrides)
    return row


def test_sinoe_rows(run):
    rows = [sinoe_row(), sinoe_row(C_SERVICE="2", LST_TYPE_DECHET="99.9"), sinoe_row(C_SERVICE="3", _geopoint=""),
            sinoe_row(C_SERVICE="4", ORIGINE_DECHET_ACC="PRO"), sinoe_row(C_SERVICE="5", ORIGINE_DECHET_ACC="NP")]
    r = run("ademesinoedecheteries", rows, NOMENCLATURE)
    acteur = r.acteur("ademesinoedecheteries_12345")
    assert (acteur["acteur_type_code"], acteur["nom"], acteur["ville"], acteur["public_accueilli"]) == (
        "decheterie", "DECHETERIE DE EXEMPLEVILLE", "Exempleville", "Particuliers et professionnels")
    assert (acteur["latitude"], acteur["longitude"], acteur["adresse_complement"]) == ("45.18", "5.72", "ZA Nord")
    assert r.propositions_of("ademesinoedecheteries_12345") == {
        ("trier", "vetement"), ("trier", "linge_de_maison"), ("trier", "emballage_carton")}
    assert r.report.unknown_values["waste_code"] == {"99.9": 1}
    assert r.report.rejections == {"no sous-categorie": 1, "missing location": 1,
                                   "out of scope: public Professionnels": 1}
    assert r.acteur("ademesinoedecheteries_5")["public_accueilli"] == ""


def test_sinoe_needs_the_nomenclature(tmp_path):
    with pytest.raises(ConfigurationError, match="nomenclature"):
        normalise(DECLARATIONS["ademesinoedecheteries"], [sinoe_row()], REFERENCE, tmp_path)


def test_configuration_error_is_raised_before_reading_rows(tmp_path):
    def rows():
        raise AssertionError("rows must not be read")
        yield {}

    smaller = type(REFERENCE)(**{**REFERENCE.__dict__, "labels": REFERENCE.labels - {"refashion"}})
    with pytest.raises(ConfigurationError, match="refashion"):
        normalise(DECLARATIONS["refashion"], rows(), smaller, tmp_path)


def test_copy_escaping_and_control_characters(run):
    r = run("refashion", [eo_row(nom_de_lorganisme="Back\\slash\tTab\nLigne\x00Nul", consignes_dacces="C:\\porte",
                                 id_point_apport_ou_reparation="ID\\1")])
    acteur = r.acteurs[0]
    assert acteur["nom"] == "Back\\slash Tab Ligne Nul"
    assert acteur["consignes_dacces"] == "C:\\porte"
    assert acteur["identifiant_unique"] == "refashion_ID\\1"
    assert acteur["exclusivite_de_reprisereparation"] == "f" and acteur["latitude"] == "48.8566"
    assert {i for i, _, _ in r.propositions} == {"refashion_ID\\1"}


def test_long_values_are_cut_to_column_size(run):
    r = run("refashion", [eo_row(nom_de_lorganisme="N" * 400)])
    assert len(r.acteurs[0]["nom"]) == 255
    assert r.report.warnings == {"truncated": 1}


def test_internal_error_becomes_a_rejection(run, monkeypatch):
    real = rules.address

    def address(value: object):
        if value == "boom":
            raise RuntimeError("unexpected")
        return real(value)

    monkeypatch.setattr(rules, "address", address)
    r = run("refashion", [eo_row(adresse_format_ban="boom"), eo_row(id_point_apport_ou_reparation="2")])
    assert r.report.rejections == {"internal error: RuntimeError": 1}
    assert r.report.rejection_examples["internal error: RuntimeError"][0]["identifier"] == "PAV-000123"
    assert [a["identifiant_externe"] for a in r.acteurs] == ["2"]


def _garbage(rnd: random.Random) -> object:
    return rnd.choice([None, "", " ", "null", "oui", "NON", 0, 1, -1, 1e308, float("nan"), True, False, [], ["a", 1],
                       {"x": [1]}, "Vêtement|Linge", "48,85,", "a\tb\\c\n", "😀" * 3, "x" * 300, 12345678901234,
                       "Solution en ligne (site web, app. mobile)", "Artisan, commerce indépendant"])


@pytest.mark.parametrize("code", ["refashion", "ocab", "cma_reparacteur", "ademesinoedecheteries"])
def test_garbage_never_crashes(run, code):
    rnd = random.Random(code)
    columns = list(eo_row()) + list(cma_row()) + list(sinoe_row())
    rows: list[Any] = [None, 42, "texte", [], {}]
    for _ in range(400):
        rows.append({c: _garbage(rnd) for c in rnd.sample(columns, rnd.randint(0, len(columns)))})
    rows.append(eo_row() if code in ("refashion", "ocab") else cma_row() if code == "cma_reparacteur" else sinoe_row())
    r = run(code, rows, NOMENCLATURE)
    report = r.report
    assert report.rows_read == len(rows)
    assert report.rows_written + report.rows_rejected == len(rows)
    assert report.rows_written >= 1 if code != "ocab" else True
    assert not any(reason.startswith("internal error") for reason in report.rejections), report.rejections
    assert len(r.acteurs) == report.acteurs_written
    for acteur in r.acteurs:
        assert acteur["identifiant_unique"] and acteur["nom"]
