"""The files normalise() writes are accepted by the carte database as they are (real PostgreSQL + PostGIS)."""

from __future__ import annotations

import psycopg
import pytest
from qfdmo.carte_db import apply, drop_staging, stage
from qfdmo.carte_db.reference import load_reference_codes
from qfdmo.sources import load_declarations, normalise
from test_sources_normalise import eo_row


@pytest.mark.parametrize("code", ["refashion", "ocab"])
def test_normalised_files_stage_and_apply(carte_dsn, tmp_path, code):
    declaration = load_declarations()[code]
    rows = [
        eo_row(ecoorganisme="VALOBAT|ECOMAISON", nom_de_lorganisme="Atelier \\ Réemploi\t« Exemple »"),
        # the same point again with other products: merged in SQL, sets united
        eo_row(ecoorganisme="VALOBAT|ECOMAISON", produitsdechets_acceptes="Meubles", nom_de_lorganisme="Autre nom"),
        eo_row(ecoorganisme="VALOBAT", id_point_apport_ou_reparation="AB/12 34", labels_etou_bonus="",
               type_de_point_de_collecte="Solution en ligne (site web, app. mobile)", latitudewgs84="",
               longitudewgs84="", exclusivite_de_reprisereparation=None, public_accueilli=""),
        eo_row(ecoorganisme="VALOBAT", id_point_apport_ou_reparation="rejected", public_accueilli="Professionnels"),
    ]
    with psycopg.connect(carte_dsn, autocommit=True) as conn:
        report = normalise(declaration, rows, load_reference_codes(conn), tmp_path)
        staged = stage(conn, "t1", tmp_path, declaration.source_codes)
        per_source = 2 if code == "ocab" else 1
        assert report.duplicates == per_source
        assert staged.duplicates_merged == per_source
        assert staged.acteurs == report.acteurs_written - report.duplicates
        assert staged.diff.new == staged.acteurs
        apply(conn, "t1", declaration.source_codes)
        prefix = "ocab_valobat" if code == "ocab" else "refashion"
        nom, lieu, public, exclusivite, has_location = conn.execute(
            "SELECT nom, lieu_prestation, public_accueilli, exclusivite_de_reprisereparation, location IS NOT NULL"
            " FROM qfdmo_acteur WHERE identifiant_unique = %s", (f"{prefix}_PAV-000123",)).fetchone()
        assert (nom, lieu, public, exclusivite, has_location) == (
            "Atelier \\ Réemploi « Exemple »", "SUR_PLACE", "Particuliers et professionnels", False, True)
        codes = {c for (c,) in conn.execute(
            "SELECT sc.code FROM qfdmo_propositionservice ps"
            " JOIN qfdmo_propositionservice_sous_categories pssc ON pssc.propositionservice_id = ps.id"
            " JOIN qfdmo_souscategorieobjet sc ON sc.id = pssc.souscategorieobjet_id"
            " WHERE ps.acteur_id = %s", (f"{prefix}_PAV-000123",))}
        assert codes == {"vetement", "linge_de_maison", "chaussures", "meuble"}
        digital = conn.execute(
            "SELECT identifiant_externe, location IS NULL, exclusivite_de_reprisereparation FROM qfdmo_acteur"
            " WHERE identifiant_unique = %s", (f"{prefix}_AB-1234_d",)).fetchone()
        assert digital == ("AB/12 34_d", True, None)
        drop_staging(conn, "t1")
