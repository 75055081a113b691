"""Benchmark of step "normalise": N generated points d'apport rows → the four COPY files.

Usage: PYTHONPATH=dags .venv/bin/python bench/normalise.py [--rows 500000] [--source refashion]

Rows are generated on the fly (a generator, as the feed reader yields them) with the variety
of real feeds: unique ids, names, addresses, SIRETs, phones, e-mails and coordinates (text
with decimal commas for a share of them), a few dozen product-list/type/flag combinations,
some rows with problems (unknown product, missing location, professional public). Random
templates are built before the clock starts and cycled with fresh identifiers. Prints rows/s,
CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Python puts this script's folder first on sys.path; other scripts there (platform.py) would
# shadow standard modules of the same name, so the folder is replaced by dags/.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "dags"))

from qfdmo.carte_db.reference import reference_codes_from_files  # noqa: E402
from qfdmo.sources import load_declarations, normalise  # noqa: E402

TYPES = [
    "Artisan, commerce indépendant",
    "Magasin / franchise, enseigne commerciale / distributeur / point de vente",
    "Point d'apport volontaire publique",
    "Point d’apport volontaire privé",
    "Association, entreprise de l’économie sociale et solidaire (ESS)",
    "Solution en ligne (site web, app. mobile)",
    "Déchèterie",
]
PRODUCTS = [
    "Vêtement|Linge|Chaussure",
    "vêtement | linge",
    "Chaussure",
    "Linge|Décoration textile",
    "Meubles|Literie|Sièges",
    "GEM hors froid|Écrans|PAM (petits appareils ménagers)",
    "Jeux et jouets|Articles de sport hors vélos",
    "Batteries & piles portables",
    "Vêtement|Produit inconnu",
]
STREETS = [
    "Rue de la République",
    "Avenue Jean Jaurès",
    "Boulevard Victor Hugo",
    "Place du Marché",
    "Chemin des Vignes",
    "Allée des Tilleuls",
    "Rue du 8 Mai 1945",
]
CITIES = ["Paris", "LYON", "Marseille", "Toulouse", "saint-étienne", "Exempleville", "Bourg-en-Bresse"]
PUBLICS = ["Particuliers", "Particuliers et professionnels", "particuliers", "", "Professionnels"]
BOOLS = [True, False, "oui", "non", "Oui ", "", None]
LABELS = ["", "Agréé Bonus Réparation", "non applicable", "ess"]
HOURS = ["", "Mo-Fr 09:00-12:00,14:00-18:00", "Mo-Sa 9h-12h30", "du lundi au vendredi"]


def profiles(rnd: random.Random, count: int) -> list[dict[str, Any]]:
    """Kinds of points of one partner: a real feed has a few dozen combinations of type, flags,
    products, labels and public, not every combination of every value."""
    choice = rnd.choice
    return [
        {
            "type_de_point_de_collecte": choice(TYPES),
            "produitsdechets_acceptes": choice(PRODUCTS),
            "labels_etou_bonus": choice(LABELS),
            "public_accueilli": choice(PUBLICS),
            "reprise": choice(["", "oui", "non", "1 pour 1"]),
            "exclusivite_de_reprisereparation": choice(BOOLS),
            "uniquement_sur_rdv": choice(BOOLS),
            "point_de_reparation": choice(BOOLS),
            "point_dapport_de_service_reparation": False,
            "point_dapport_pour_reemploi": choice(BOOLS),
            "point_de_collecte_ou_de_reprise_des_dechets": choice([True, "oui"]),
            "service_a_domicile": choice(["non", "", "Service à domicile et en boutique"]),
        }
        for _ in range(count)
    ]


def _random_rows(count: int, seed: int) -> Iterator[dict[str, Any]]:
    rnd = random.Random(seed)
    choice, randint, rand = rnd.choice, rnd.randint, rnd.random
    kinds = profiles(rnd, 60)
    for i in range(count):
        lat = 42.0 + rand() * 8
        lon = -4.0 + rand() * 12
        text_coords = i % 3 == 0
        cp = randint(1000, 95999)
        yield {
            **choice(kinds),
            "id_point_apport_ou_reparation": f"PAV-{i:07d}" if i % 50 else "",
            "nom_de_lorganisme": f"Organisme Exemple {i} {choice(CITIES)}",
            "enseigne_commerciale": choice(["", f"Boutique {i % 997}"]),
            "ecoorganisme": "REFASHION",
            "adresse_format_ban": f"{randint(1, 200)} {choice(STREETS)} {cp:05d} {choice(CITIES)}",
            "adresse_complement": choice(["", "", "Bâtiment B"]),
            "latitudewgs84": f"{lat:.6f}".replace(".", ",") if text_coords else (lat if i % 400 else 0),
            "longitudewgs84": f"{lon:.6f}".replace(".", ",") + "," if text_coords else lon,
            "latitudemercator": "",
            "longitudemercator": "",
            "siret": choice([f"{randint(10**13, 10**14 - 1)}", float(randint(10**12, 10**13 - 1)), ""]),
            "telephone": choice(
                [
                    f"01 {randint(10, 99)} {randint(10, 99)} {randint(10, 99)} {randint(10, 99)}",
                    f"33{randint(100000000, 999999999)}",
                    "",
                ]
            ),
            "email": choice([f"Contact{i}@Example.org ", "", "not-an-email"]),
            "site_web": choice([f"www.exemple{i % 1000}.fr", "", f"https://exemple{i % 1000}.fr/page"]),
            "horaires_douverture": choice(HOURS),
            "consignes_dacces": choice(["", "Sonner à l'interphone"]),
            "perimetre_dintervention": "",
            "filiere": "Textiles",
            "_i": i,
            "_rand": randint(0, 999999),
            "_id": f"id{i:019d}",
            "_score": None,
            "_updatedAt": "2025-03-05T08:15:30.000Z",
            "_geopoint": f"{lat},{lon}",
        }


TEMPLATES = 20_000


def generate(count: int, templates: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """`count` rows: random templates (built before timing starts) cycled with fresh identifiers,
    so that the measured time is normalisation, not random-value generation."""
    for i in range(count):
        template = templates[i % len(templates)]
        row = dict(template)
        if template["id_point_apport_ou_reparation"]:
            row["id_point_apport_ou_reparation"] = f"PAV-{i:07d}"
        else:  # identifiant built from the name
            row["nom_de_lorganisme"] = f"Organisme Exemple {i}"
        yield row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--source", default="refashion")
    args = parser.parse_args()
    declaration = load_declarations()[args.source]
    reference = reference_codes_from_files()
    rows = generate(args.rows, list(_random_rows(min(args.rows, TEMPLATES), seed=7)))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as run_dir:
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        report = normalise(declaration, rows, reference, Path(run_dir))
        cpu = time.process_time() - started_cpu
        wall = time.perf_counter() - started_wall
        sizes = sum(p.stat().st_size for p in Path(run_dir).iterdir())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"normalise {args.source}: {report.rows_read:,} rows read, {report.acteurs_written:,} acteurs written, "
          f"{sum(report.rejections.values()):,} rejected, {report.duplicates} duplicates")
    print(f"  CPU {cpu:.2f} s (wall {wall:.2f} s, load average {os.getloadavg()[0]:.1f}): "
          f"{report.rows_read / cpu:,.0f} rows/s, {cpu / report.rows_read * 1e6:.1f} us/row")
    print(f"  files {sizes / 1e6:.0f} MB; peak RSS {peak_mb:.0f} MB ({rss_before:.0f} MB before normalise)")
    print(f"  rejections {dict(report.rejections)}")
    print(f"  warnings {dict(report.warnings)}")


if __name__ == "__main__":
    main()
