"""Field rules of the 2026 normalisation (examples from pointsapport-columns.md and the domain brief)."""

from __future__ import annotations

import math

import pytest
from qfdmo.sources import rules


@pytest.mark.parametrize("value", ["null", "NULL", " None ", "nan", "NA", "n/a", "Non applicable", "aucun", "-", "",
                                   None, float("nan")])
def test_null_like_values_become_empty(value):
    assert rules.text(value) == ""


@pytest.mark.parametrize(("value", "expected"), [
    ("  Boutique Exemple ", "Boutique Exemple"),
    (4521, "4521"),
    (4521.0, "4521"),
    (2.5, "2.5"),
    (True, "true"),
    ("a\tb\nc\x00d", "a b c d"),  # control characters would break the COPY files
    ("Nanterre", "Nanterre"),
])
def test_text(value, expected):
    assert rules.text(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("oui", (True, None)), ("Oui ", (True, None)), ("yes", (True, None)), ("TRUE", (True, None)),
    (True, (True, None)), ("non", (False, None)), ("no", (False, None)), ("false", (False, None)),
    (False, (False, None)), ("", (None, None)), (None, (None, None)), ("peut-être", (None, "invalid_boolean")),
    (1, (True, None)), (0, (False, None)),
])
def test_boolean(value, expected):
    assert rules.boolean(value) == expected


@pytest.mark.parametrize(("siret", "siren", "expected"), [
    ("12345678900011", None, ("12345678900011", "123456789", None)),
    (1234567890001.0, None, ("01234567890001", "012345678", None)),  # float, lost leading zero
    ("1234567890001.0", None, ("01234567890001", "012345678", None)),
    ("1234567890001", None, ("01234567890001", "012345678", None)),
    ("123456789", None, ("", "123456789", None)),  # a SIREN in the SIRET column
    ("123 456 789 00011", "", ("12345678900011", "123456789", None)),
    ("12345", None, ("", "", "invalid_siret")),
    ("", "987654321", ("", "987654321", None)),
    ("12345678900011", "987654321", ("12345678900011", "987654321", None)),
    (None, None, ("", "", None)),
])
def test_siret_siren(siret, siren, expected):
    assert rules.siret_siren(siret, siren) == expected


@pytest.mark.parametrize(("value", "cp", "expected"), [
    ("01 23 45 67 89", "", ("0123456789", None)),
    ("01.23.45.67.89", "", ("0123456789", None)),
    ("33123456789", "", ("0123456789", None)),
    ("+33612345678", "", ("+33612345678", None)),
    ("123456789", "75011", ("0123456789", None)),  # lost leading zero
    ("262123456", "97400", ("262123456", None)),  # overseas: no zero added
    (612345678, "", ("0612345678", None)),
    ("12-34", "", ("", "invalid_telephone")),
    ("01 ٢٣ 45 67 89", "", ("01456789", None)),  # digits of other scripts are not kept (not ASCII)
    ("06 12 34 56 78 ", "", ("0612345678", None)),
    ("", "", ("", None)),
])
def test_telephone(value, cp, expected):
    assert rules.telephone(value, cp) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("75011", ("75011", None)), ("1000", ("01000", None)), (1000, ("01000", None)),
    ("123", ("", "invalid_code_postal")),
    ("", ("", None)),
])
def test_code_postal(value, expected):
    assert rules.code_postal(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Contact@Example.org ", ("contact@example.org", None)),
    ("mailto:a.b@exemple.fr", ("a.b@exemple.fr", None)),
    ("pas un email", ("", "invalid_email")),
    ("mailto:sans-arobase.fr", ("", "invalid_email")),
    ("a@b", ("", "invalid_email")),
    ("", ("", None)),
])
def test_email(value, expected):
    assert rules.email(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("www.example.org", ("https://www.example.org", None)),
    ("example.org/page?x=1", ("https://example.org/page?x=1", None)),
    ("http://example.org", ("http://example.org", None)),
    ("https//example.org", ("https://example.org", None)),  # missing ':'
    ("http:/example.org", ("http://example.org", None)),  # missing '/'
    ("://example.org", ("https://example.org", None)),
    ("Hexemple.org", ("https://Hexemple.org", None)),
    ("pas une url", ("", "invalid_url")),
    ("", ("", None)),
])
def test_url(value, expected):
    assert rules.url(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("12 Rue de l'Exemple 75011 Paris", ("12 Rue de l'Exemple", "75011", "Paris", None)),
    ("Rue des Lilas;38000;EXEMPLEVILLE", ("Rue des Lilas", "38000", "Exempleville", None)),
    ("5 Av. du 8 Mai 1945, 01000 Exempleville", ("5 Av. du 8 Mai 1945", "01000", "Exempleville", None)),
    ("5 Av. du 8 Mai 1945 1000 Exempleville", ("5 Av. du 8 Mai 1945", "01000", "Exempleville", None)),
    ("1000 Exempleville", ("", "01000", "Exempleville", None)),
    ("10 Place X - 69001 - LYON CEDEX 01", ("10 Place X", "69001", "Lyon", None)),
    ("3 rue Y 13001 MARSEILLE*", ("3 rue Y", "13001", "Marseille", None)),
    ("ZA du Parc, 42000 Saint-Étienne", ("ZA du Parc", "42000", "Saint-Étienne", None)),
    ("Lieu-dit sans code", ("Lieu-dit sans code", "", "", "unparsed_address")),
    ("", ("", "", "", None)),
])
def test_address(value, expected):
    assert rules.address(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    (48.8566, (48.8566, None)), ("48.8566", (48.8566, None)), ("48,8566", (48.8566, None)),
    ("2,3522,", (2.3522, None)), ("2,35,", (2.35, None)), (0, (None, None)), ("0", (None, None)),
    ("0.0", (None, None)), ("", (None, None)), (None, (None, None)), ("abc", (None, "invalid_coordinate")),
    ("123.5", (None, "invalid_coordinate")), (float("nan"), (None, None)),
    ("48,85,66", (None, "invalid_coordinate")), (",", (None, "invalid_coordinate")), ("nan", (None, None)),
])
def test_coordinate(value, expected):
    assert rules.coordinate(value, 90.0) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Mo-Fr 09:00-12:00,14:00-18:00", ("Mo-Fr 09:00-12:00,14:00-18:00", None)),
    ("Mo-Fr 9h-12h30", ("Mo-Fr 09:00-12:30", None)),
    ("Mo-Sa 09:00-12:30; PH off", ("Mo-Sa 09:00-12:30; PH off", None)),
    ("24/7", ("24/7", None)),
    ("du lundi au vendredi de 9h à 18h", ("", "invalid_horaires_osm")),
    ("", ("", None)),
])
def test_horaires_osm(value, expected):
    assert rules.horaires_osm(value) == expected


@pytest.mark.parametrize(("label", "code"), [
    ("Solution en ligne (site web, app. mobile)", "acteur_digital"),
    ("Artisan, commerce indépendant", "artisan"),
    (" ARTISAN, COMMERCE INDEPENDANT ", "artisan"),
    ("Magasin / franchise, enseigne commerciale / distributeur / point de vente", "commerce"),
    ("Magasin / franchise, enseigne commerciale / distributeur / point de vente / franchise, enseigne commerciale"
     " / distributeur / point de vente", "commerce"),
    ("Point d'apport volontaire publique", "pav_public"),
    ("Point d’apport volontaire privé", "pav_prive"),
    ("Point d'apport volontaire éphémère / ponctuel", "pav_ponctuel"),
    ("Association, entreprise de l’économie sociale et solidaire (ESS)", "ess"),
    ("Établissement de santé", "ets_sante"),
    ("Déchèterie", "decheterie"),
    ("Plateforme inertes", "plateforme_inertes"),
    ("Vendeur de glaces", None),
])
def test_acteur_type(label, code):
    assert rules.acteur_type(label) == code


@pytest.mark.parametrize(("value", "expected"), [
    ("Particuliers", ("Particuliers", None)),
    ("PARTICULIERS ET PROFESSIONNELS", ("Particuliers et professionnels", None)),
    ("Professionnels", ("Professionnels", None)), ("Aucun", ("Aucun", None)), ("DMA", ("Particuliers", None)),
    ("DMA/PRO", ("Particuliers et professionnels", None)), ("PRO", ("Professionnels", None)), ("NP", ("", None)),
    ("Tout le monde", ("", "invalid_public_accueilli")), ("", ("", None)),
])
def test_public_accueilli(value, expected):
    assert rules.public_accueilli(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("oui", ("1 pour 1", None)), ("non", ("1 pour 0", None)), ("1 pour 0", ("1 pour 0", None)),
    ("1 POUR 1", ("1 pour 1", None)), ("parfois", ("", "invalid_reprise")), ("", ("", None)),
])
def test_reprise(value, expected):
    assert rules.reprise(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("Service à domicile uniquement", "A_DOMICILE"), ("oui exclusivement", "A_DOMICILE"),
    ("oui", "SUR_PLACE_OU_A_DOMICILE"), ("Service à domicile et en boutique", "SUR_PLACE_OU_A_DOMICILE"),
    ("non", "SUR_PLACE"), ("", "SUR_PLACE"), (None, "SUR_PLACE"),
])
def test_lieu_prestation(value, expected):
    assert rules.lieu_prestation(value) == expected


def test_identifiers():
    assert rules.identifiant_externe_from_nom(" Association - Exemple  Réemploi ") == "Association_Exemple_Réemploi"
    assert rules.identifiant_unique("refashion", "TLC-REFASHION-PAV-0000001") == "refashion_TLC-REFASHION-PAV-0000001"
    assert rules.identifiant_unique("ecodds", "AB/12 34") == "ecodds_AB-1234"


def test_rules_never_raise_on_odd_types():
    odd = [None, True, 3, 2.5, float("inf"), math.nan, [1, 2], {"a": 1}, b"bytes", object()]
    for value in odd:
        rules.text(value)
        rules.boolean(value)
        rules.siret_siren(value, value)
        rules.telephone(value)
        rules.code_postal(value)
        rules.email(value)
        rules.url(value)
        rules.address(value)
        rules.coordinate(value, 90.0)
        rules.public_accueilli(value)
        rules.reprise(value)
        rules.lieu_prestation(value)
