"""A labelled evaluation set for the dedup: generated acteurs with the place each one is (`entite`),
so pairwise precision and recall can be measured.

    generate(count, seed) -> list of rows (the qfdmo_vueacteur columns the dedup reads + `entite`)

About 10 % of the acteurs are in duplicate groups of 2-3, each member from another source and
written differently: case, accents, abbreviations (bd/boulevard, st/saint, av/avenue), legal forms
(SARL, SAS), word order, one typo, address complements, coordinates 0-80 m apart, SIRET on one side
only, phones written differently, URL with or without www. Hard negatives (different places, the
same `entite` never): different shops at one address, one chain in two streets of a town (same
SIREN, another SIRET), one name in two towns, two look-alikes published by one source. The
remaining acteurs are distinct places spread over towns, several sharing generic names.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Any

SOURCES = list(range(1, 13))
ACTEUR_TYPES = [1, 2, 3, 4, 5, 6]
KINDS = ["Atelier", "Ressourcerie", "Recyclerie", "Cordonnerie", "Boutique", "Garage", "Repair Café",
         "Couture", "Électroménager", "Informatique", "Vélo", "Brocante", "Friperie", "Emmaüs",
         "Horlogerie", "Bijouterie", "Meubles", "Librairie"]
SURNAMES = ["Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
            "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
            "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
            "Müller", "Lefebvre", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier",
            "Chevalier", "François", "Legrand", "Gauthier", "Garcia", "Perrin", "Robin", "Clément",
            "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Gautier", "Masson"]
SYLLABLES = ["ka", "ro", "li", "mé", "tu", "va", "zor", "pi", "no", "bel", "cha", "dé", "fi", "gu",
             "lor", "mi", "pa", "ré", "sa", "té", "vo", "bri", "clo", "fra", "gri", "plu", "tra"]
STREET_TYPES = [("Rue", "Rue"), ("Boulevard", "Bd"), ("Avenue", "Av"), ("Place", "Pl"), ("Chemin", "Ch"),
                ("Impasse", "Imp"), ("Allée", "All")]
STREET_NAMES = ["Saint-Jacques", "Victor Hugo", "Jean Jaurès", "de la République", "Pasteur",
                "Saint-Michel", "du Général de Gaulle", "des Lilas", "Gambetta", "de la Gare",
                "Sainte-Anne", "Voltaire", "des Écoles", "du Moulin", "de Paris", "Carnot", "Foch",
                "de la Liberté", "des Tilleuls", "Saint-Louis", "du Château", "de l'Église", "Émile Zola",
                "des Peupliers", "Jules Ferry", "du Marché", "de Verdun", "Saint-Martin", "Nationale"]
COMPLEMENTS = ["Bât B", "2e étage", "Résidence Les Pins", "Local 3", "Porte 2", "BP 12"]
LEGAL = ["SARL", "SAS", "EURL", "SA"]
TOWN_PREFIXES = ["Saint-", "Sainte-", "", "", "", "Le ", "La ", "Les "]


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _towns(rng: random.Random, count: int) -> list[dict[str, Any]]:
    towns = []
    for i in range(count):
        name = rng.choice(TOWN_PREFIXES) + _pseudo_word(rng)
        if rng.random() < 0.2:
            name += "-sur-" + _pseudo_word(rng)
        towns.append({"ville": name, "code_postal": f"{(i * 37) % 95 + 1:02d}{i % 1000:03d}",
                      "lat": rng.uniform(43.0, 50.5), "lon": rng.uniform(-1.5, 7.0),
                      # Towns of very different sizes: a few big ones hold many acteurs.
                      "radius": rng.choice([0.01, 0.02, 0.03, 0.05])})
    return towns


def _siret(rng: random.Random) -> str:
    return f"{rng.randrange(10**8, 10**9)}{rng.randrange(10**4, 10**5)}"


def _phone(rng: random.Random) -> str:
    return f"0{rng.randint(1, 9)}{rng.randrange(10**7, 10**8)}"


def _place(rng: random.Random, towns: list[dict[str, Any]], weights: list[float]) -> dict[str, Any]:
    town = rng.choices(towns, weights)[0]
    kind = rng.choice(KINDS)
    if rng.random() < 0.15:
        nom = f"{kind} de {town['ville']}"  # generic: many places share it across towns
    elif rng.random() < 0.5:
        nom = f"{kind} {rng.choice(SURNAMES)} {_pseudo_word(rng)}"
    else:
        nom = f"{_pseudo_word(rng)} {kind}"
    street_type, street_abbr = rng.choice(STREET_TYPES)
    street = rng.choice(STREET_NAMES)
    number = rng.randint(1, 250)
    return {
        "nom": nom,
        "numero": number, "street_type": street_type, "street_abbr": street_abbr, "street": street,
        "code_postal": town["code_postal"], "ville": town["ville"],
        "lat": town["lat"] + rng.uniform(-town["radius"], town["radius"]),
        "lon": town["lon"] + rng.uniform(-town["radius"], town["radius"]) * 1.4,
        "siret": _siret(rng) if rng.random() < 0.6 else "",
        "telephone": _phone(rng) if rng.random() < 0.6 else "",
        "url": f"https://www.{_strip_accents(nom).lower().replace(' ', '-')[:30]}.fr" if rng.random() < 0.3 else "",
        "email": "",
        "acteur_type_id": rng.choice(ACTEUR_TYPES),
        "town": town,
    }


def _row(place: dict[str, Any], entite: str, identifiant: str, source: int) -> dict[str, Any]:
    return {
        "identifiant_unique": identifiant, "entite": entite, "nom": place["nom"],
        "adresse": f"{place['numero']} {place['street_type']} {place['street']}", "adresse_complement": "",
        "code_postal": place["code_postal"], "ville": place["ville"],
        "latitude": place["lat"], "longitude": place["lon"], "siret": place["siret"],
        "siren": place["siret"][:9], "telephone": place["telephone"], "url": place["url"],
        "email": place["email"], "acteur_type_id": place["acteur_type_id"], "source_id": source,
    }


def _typo(rng: random.Random, text: str) -> str:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 6:
        return text
    i = rng.choice(letters[2:])
    op = rng.random()
    if op < 0.4:
        return text[:i] + text[i + 1:]
    if op < 0.7:
        return text[:i] + rng.choice("aeiourstln") + text[i + 1:]
    return text[:i] + text[i] + text[i:]


def _variant(rng: random.Random, row: dict[str, Any], place: dict[str, Any]) -> dict[str, Any]:
    """The same place as another source writes it."""
    variant = dict(row)
    nom = place["nom"]
    changes = rng.sample(["case", "accents", "legal", "order", "typo", "saint"], k=rng.randint(1, 3))
    if "order" in changes and " " in nom:
        words = nom.split(" ")
        nom = " ".join(words[1:] + words[:1])
    if "legal" in changes:
        nom = f"{nom} {rng.choice(LEGAL)}" if rng.random() < 0.7 else f"{rng.choice(LEGAL)} {nom}"
    if "saint" in changes:
        nom = nom.replace("Saint-", "St-").replace("Sainte-", "Ste-")
    if "typo" in changes:
        nom = _typo(rng, nom)
    if "accents" in changes:
        nom = _strip_accents(nom)
    if "case" in changes:
        nom = nom.upper() if rng.random() < 0.5 else nom.lower()
    variant["nom"] = nom
    street = place["street"]
    street_type = place["street_abbr"] if rng.random() < 0.5 else place["street_type"]
    if rng.random() < 0.3:
        street = street.replace("Saint-", "St ").replace("Sainte-", "Ste ")
    adresse = f"{place['numero']} {street_type} {street}"
    if rng.random() < 0.2:
        adresse = f"{place['numero']}, {street_type.lower()} {_strip_accents(street).lower()}"
    if rng.random() < 0.25:
        adresse = f"{adresse} {rng.choice(COMPLEMENTS)}"
    if rng.random() < 0.1:
        adresse = _typo(rng, adresse)
    variant["adresse"] = adresse
    if rng.random() < 0.2:
        variant["ville"] = _strip_accents(place["ville"]).upper()
    # 0-80 m apart: about 1e-5 degree per metre.
    distance = rng.uniform(0, 80) / 111_000
    angle = rng.uniform(0, 6.283)
    import math

    variant["latitude"] = place["lat"] + distance * math.sin(angle)
    variant["longitude"] = place["lon"] + distance * math.cos(angle) * 1.4
    if place["siret"] and rng.random() < 0.5:
        variant["siret"], variant["siren"] = "", ""  # SIRET on one side only
    if place["telephone"]:
        phone = place["telephone"]
        style = rng.random()
        if style < 0.3:
            variant["telephone"] = " ".join(phone[i:i + 2] for i in range(0, 10, 2))
        elif style < 0.5:
            variant["telephone"] = "+33 " + phone[1:]
        elif style < 0.7:
            variant["telephone"] = ""
    if place["url"] and rng.random() < 0.5:
        variant["url"] = place["url"].replace("https://www.", "http://") + "/contact"
    return variant


def generate(count: int, seed: int = 12, duplicate_share: float = 0.1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    towns = _towns(rng, max(20, count // 80))
    weights = [rng.paretovariate(1.5) for _ in towns]
    rows: list[dict[str, Any]] = []
    entity = 0

    def new_id(source: int) -> str:
        return f"src{source}_{len(rows):07d}"

    def add(row: dict[str, Any]) -> None:
        rows.append(row)

    hard_negative_budget = int(count * 0.04)
    duplicate_budget = int(count * duplicate_share)
    in_duplicates = 0
    while in_duplicates < duplicate_budget:
        entity += 1
        place = _place(rng, towns, weights)
        size = 2 if rng.random() < 0.75 else 3
        sources = rng.sample(SOURCES, size)
        first = _row(place, f"e{entity}", new_id(sources[0]), sources[0])
        add(first)
        for source in sources[1:]:
            variant = _variant(rng, first, place)
            variant["identifiant_unique"] = new_id(source)
            variant["source_id"] = source
            add(variant)
        in_duplicates += size

    made = 0
    while made < hard_negative_budget:
        kind = made % 4
        base = _place(rng, towns, weights)
        a_source, b_source = rng.sample(SOURCES, 2)
        entity += 1
        add(_row(base, f"e{entity}", new_id(a_source), a_source))
        other = dict(base)
        if kind == 0:  # different shops at one address
            other2 = _place(rng, [base["town"]], [1.0])
            while other2["nom"].split(" ")[0] == base["nom"].split(" ")[0]:
                other2 = _place(rng, [base["town"]], [1.0])
            other.update(nom=other2["nom"], acteur_type_id=other2["acteur_type_id"], siret=other2["siret"],
                         telephone=other2["telephone"], url=other2["url"])
            other["lat"] += rng.uniform(-3, 3) / 111_000
        elif kind == 1:  # one chain in two streets of a town: same SIREN, another SIRET
            other2 = _place(rng, [base["town"]], [1.0])
            siren = base["siret"][:9] or _siret(rng)[:9]
            other.update(numero=other2["numero"], street=other2["street"], street_type=other2["street_type"],
                         lat=other2["lat"], lon=other2["lon"], telephone=_phone(rng),
                         siret=siren + f"{rng.randrange(10**4, 10**5)}")
        elif kind == 2:  # one name in two towns
            other2 = _place(rng, towns, weights)
            other.update({k: other2[k] for k in ("numero", "street", "street_type", "code_postal", "ville",
                                                 "lat", "lon", "siret", "telephone", "town")})
        else:  # two look-alikes of one source
            b_source = a_source
            other["nom"] = _typo(rng, base["nom"])
            other["numero"] = base["numero"] + rng.randint(1, 4)
            other.update(siret="", telephone=_phone(rng) if base["telephone"] else "")
            other["lat"] += rng.uniform(-40, 40) / 111_000
        entity += 1
        add(_row(other, f"e{entity}", new_id(b_source), b_source))
        made += 2

    while len(rows) < count:
        entity += 1
        source = rng.choice(SOURCES)
        add(_row(_place(rng, towns, weights), f"e{entity}", new_id(source), source))
    return rows[:count]


def true_pairs(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The pairs of acteurs that are the same place (identifiants sorted in each pair)."""
    by_entity: dict[str, list[str]] = {}
    for row in rows:
        by_entity.setdefault(row["entite"], []).append(row["identifiant_unique"])
    pairs = set()
    for members in by_entity.values():
        members.sort()
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                pairs.add((a, b))
    return pairs
