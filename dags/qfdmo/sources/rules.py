"""Field-level normalisation rules (the 2026 rules for the eco-organismes' points d'apport columns,
summarised in the README, "Règles de normalisation"; their words in vocabulary.py).

Each cleaner takes a raw value as the feed returns it (str, number, bool or None) and returns
the clean value, plus a warning kind when it had to blank or could not understand the value.
They never raise on odd input types: the row loop turns any surprise into a rejection, but a
cleaner should not be the cause.
"""

from __future__ import annotations

import functools
import math
import re

from unidecode import unidecode

from qfdmo.sources.vocabulary import (
    A_DOMICILE,
    ACTEUR_TYPES,
    COMMERCE,
    COMMERCE_PREFIX,
    FALSE_WORDS,
    NULL_LIKE,
    PUBLIC_ACCUEILLI,
    REPRISE,
    SUR_PLACE_OU_A_DOMICILE,
    TRUE_WORDS,
)

_NULL_LIKE_FIRST = frozenset(v[0] for v in NULL_LIKE) | frozenset(v[0].upper() for v in NULL_LIKE)

# Curly quotes and apostrophes seen in partner labels, mapped to their straight forms.
_QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "´": "'", "`": "'", "“": '"', "”": '"', "«": '"', "»": '"'})
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\ue000-\uf8ff]+")
_SPACES = re.compile(r"\s+")


def _sanitize(text: str) -> str:
    # Control characters (tabs, newlines, NUL) would break the COPY files; they carry no
    # meaning in these one-line fields, so they become spaces.
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def text(value: object) -> str:
    """Any raw value as clean one-line text; null-like values become ''."""
    if type(value) is str:
        s = value.strip()
        if not s.isprintable():
            s = _sanitize(s)
        # Every null-like value starts with one of these characters: one cheap test first.
        if s and s[0] in _NULL_LIKE_FIRST and s.lower() in NULL_LIKE:
            return ""
        return s
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        # A numeric id typed as float by the partner's tooling: 4521.0 means "4521".
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return str(value)
    return text(str(value))


# --- booleans -------------------------------------------------------------------------------

def boolean(value: object) -> tuple[bool | None, str | None]:
    """oui/yes/true → True, non/no/false → False, empty → None, other → None + warning."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value), None
    s = text(value).lower()
    if not s:
        return None, None
    if s in TRUE_WORDS:
        return True, None
    if s in FALSE_WORDS:
        return False, None
    return None, "invalid_boolean"


# --- identifiers --------------------------------------------------------------------------------

_NON_DIGITS = re.compile(r"[^0-9]+")  # ASCII digits only: "\d" would keep other scripts' digits
_FLOAT_TEXT = re.compile(r"^\s*([0-9]+)\.0*\s*$")


def _digits(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        return str(int(value)) if value.is_integer() else ""
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    s = text(value)
    if not s:
        return ""
    m = _FLOAT_TEXT.match(s)
    if m:
        return m.group(1)
    return _NON_DIGITS.sub("", s)


def siret_siren(siret_value: object, siren_value: object) -> tuple[str, str, str | None]:
    """(siret, siren, warning). 13 digits lost a leading 0; 9 digits in the siret column is a SIREN."""
    if not siren_value and type(siret_value) is str and len(siret_value) == 14 and siret_value.isascii() \
            and siret_value.isdigit():
        return siret_value, siret_value[:9], None  # the common case
    if not siret_value and not siren_value:
        return "", "", None
    warning = None
    siret = _digits(siret_value)
    if siret and len(siret) != 14:
        if len(siret) == 13:
            siret = "0" + siret
        elif len(siret) == 9:
            siren_value = siren_value or siret
            siret = ""
        else:
            siret, warning = "", "invalid_siret"
    siren = _digits(siren_value)
    if siren and len(siren) != 9:
        if len(siren) == 8:
            siren = "0" + siren
        else:
            siren, warning = "", warning or "invalid_siren"
    if not siren and siret:
        siren = siret[:9]
    return siret, siren, warning


_PHONE_KEEP = re.compile(r"[^0-9+]+")


def telephone(value: object, code_postal: str = "") -> tuple[str, str | None]:
    """Keep digits and '+'; restore a lost leading 0; '33…' → '0…'; fewer than 6 digits dropped."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        s = _digits(value)
    else:
        s = text(value)
        compact = s.replace(" ", "")
        # The usual "01 23 45 67 89": spaces only between ASCII digits, no regex needed.
        s = compact if compact.isdigit() and compact.isascii() else _PHONE_KEEP.sub("", s)
    if not s:
        return "", None
    digits = s.lstrip("+")
    if len(digits) < 6 or "+" in digits:
        return "", "invalid_telephone"
    if s[0] == "+":
        return s, None
    if len(s) == 9 and (not code_postal or code_postal < "96000"):
        return "0" + s, None
    if s.startswith("33") and len(s) == 11:
        return "0" + s[2:], None
    return s, None


def code_postal(value: object) -> tuple[str, str | None]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        s = _digits(value)
    else:
        s = text(value)
        if not s:
            return "", None
        s = _NON_DIGITS.sub("", s)
    if len(s) == 4:
        s = "0" + s
    if len(s) != 5:
        return "", "invalid_code_postal"
    return s, None


_EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,}$"
)


def email(value: object) -> tuple[str, str | None]:
    s = text(value).lower()
    if not s:
        return "", None
    if s.startswith("mailto:"):
        s = s[7:]
    if len(s) > 254 or "@" not in s or not _EMAIL.match(s):
        return "", "invalid_email"
    return s, None


# A scheme with missing or extra ':' and '/' ("https//x", "http:/x", "://x").
_URL_SCHEME = re.compile(r"^(?P<scheme>https?)?[:/]*", re.IGNORECASE)
_URL = re.compile(r"^https?://[^\s/?#]+\.[^\s/?#]{2,}(?:[/?#]\S*)?$", re.IGNORECASE)


def url(value: object) -> tuple[str, str | None]:
    """Scheme-less URLs get https://; broken schemes ('https//', 'http:/') are repaired."""
    s = text(value)
    if not s:
        return "", None
    lower = s[:8].lower()
    if s[0] not in "hH:/":  # no scheme at all (the usual "www.…"): what _URL_SCHEME would find
        s = "https://" + s
    elif not (lower.startswith("https://") or lower.startswith("http://")):
        m = _URL_SCHEME.match(s)
        assert m is not None  # the pattern matches the empty prefix
        scheme = "http://" if (m.group("scheme") or "").lower() == "http" else "https://"
        s = scheme + s[m.end() :]
    if len(s) > 2048 or not _URL.match(s):
        return "", "invalid_url"
    return s, None


# --- address ----------------------------------------------------------------------------------

_CEDEX = re.compile(r"\s*\bcedex\b(?:\s*\d+)?", re.IGNORECASE)
# Greedy address part: the CP is the LAST group of 4-5 digits preceded by a separator and
# followed by a separator and a city.
_ADDRESS = re.compile(r"^(?P<street>.*)[\s,;\-]+(?P<cp>[0-9]{4,5})[\s,;\-]+(?P<city>[^\d\s,;\-].*)$")
_CP_CITY = re.compile(r"^(?P<cp>[0-9]{4,5})[\s,;\-]+(?P<city>[^\d\s,;\-].*)$")
_STRIP_SEP = " ,;-\t"


def city(value: str) -> str:
    s = value.replace("*", "").strip(_STRIP_SEP)
    if not s:
        return ""
    if s.isupper() or s.islower():
        # str.title() would capitalise after apostrophes ("L'Isle" is fine, "D'Ici" too).
        s = s.title()
    return s


def address(value: object) -> tuple[str, str, str, str | None]:
    """One-line BAN address → (adresse, code_postal, ville, warning)."""
    s = text(value)
    if not s:
        return "", "", "", None
    if "edex" in s or "EDEX" in s:
        s = _CEDEX.sub("", s).strip()
    m = _ADDRESS.match(s)
    if m:
        street = m.group("street").strip(_STRIP_SEP)
    else:
        m = _CP_CITY.match(s)
        if not m:
            return s.strip(_STRIP_SEP), "", "", "unparsed_address"
        street = ""
    cp = m.group("cp")
    if len(cp) == 4:
        cp = "0" + cp
    return street, cp, city(m.group("city")), None


# --- coordinates ------------------------------------------------------------------------------


def coordinate(value: object, limit: float) -> tuple[float | None, str | None]:
    """Float or text with decimal comma / trailing comma; 0 and out-of-range values are missing."""
    if value is None or isinstance(value, bool):
        return None, None
    if isinstance(value, float | int):
        f = float(value)
    else:
        s = text(value)
        if not s:
            return None, None
        if "," in s:  # float() refuses any comma: repaired first rather than after a costly ValueError
            s = s.rstrip(",").replace(",", ".")
        try:
            f = float(s)
        except ValueError:
            return None, "invalid_coordinate"
    if f != f or f == 0.0:
        return None, None
    if not -limit <= f <= limit:
        return None, "invalid_coordinate"
    return f, None


# --- opening hours ----------------------------------------------------------------------------

_HOUR_H = re.compile(r"\b(\d{1,2})\s*[hH]\s*(\d{2})?\b")
_OSM_TOKEN = re.compile(
    r"(?:Mo|Tu|We|Th|Fr|Sa|Su|PH|SH|off|closed|open|unknown|24/7|"
    r"Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec|week|"
    r"\d{1,2}:\d{2}\+?|\d+|[-,;:\s\[\]])+"
)
_OSM_TIME_OR_DAY = re.compile(r"\d{1,2}:\d{2}|\b(?:Mo|Tu|We|Th|Fr|Sa|Su|PH)\b|24/7")


def _hour_h(m: re.Match[str]) -> str:
    return f"{int(m.group(1)):02d}:{m.group(2) or '00'}"


@functools.lru_cache(maxsize=4096)
def horaires_osm(value: str) -> tuple[str, str | None]:
    """Light check of OSM opening_hours syntax; '12h30' → '12:30'. Invalid → '' + warning."""
    if not value:
        return "", None
    s = _HOUR_H.sub(_hour_h, value) if ("h" in value or "H" in value) else value
    s = _SPACES.sub(" ", s).strip()
    if not _OSM_TOKEN.fullmatch(s) or not _OSM_TIME_OR_DAY.search(s):
        return "", "invalid_horaires_osm"
    return s, None


# --- vocabularies -------------------------------------------------------------------------------


def label_key(value: str) -> str:
    """Matching key of a partner label: trimmed, lowercased, straight quotes, single spaces."""
    return _SPACES.sub(" ", value.translate(_QUOTES).strip().lower())


def unaccented_key(value: str) -> str:
    return _SPACES.sub(" ", unidecode(label_key(value)))


@functools.lru_cache(maxsize=1024)
def acteur_type(value: str) -> str | None:
    """Partner type label → acteur type code (None when unknown)."""
    key = unaccented_key(value)
    code = ACTEUR_TYPES.get(key)
    if code is None and key.startswith(COMMERCE_PREFIX):
        code = COMMERCE
    return code


def public_accueilli(value: object) -> tuple[str, str | None]:
    # Not through text(): "aucun" is null-like elsewhere but meaningful here.
    s = value.strip().lower() if isinstance(value, str) else text(value).lower()
    if not s:
        return "", None
    found = PUBLIC_ACCUEILLI.get(s)
    if found is None:
        found = PUBLIC_ACCUEILLI.get(unaccented_key(s))
    if found is None:
        return "", "invalid_public_accueilli"
    return found, None


def reprise(value: object) -> tuple[str, str | None]:
    s = _SPACES.sub(" ", text(value).lower())
    if not s:
        return "", None
    found = REPRISE.get(s)
    return (found, None) if found is not None else ("", "invalid_reprise")


def lieu_prestation(value: object) -> str:
    s = text(value)
    if not s:
        return "SUR_PLACE"
    key = unaccented_key(s)
    if key in A_DOMICILE:
        return "A_DOMICILE"
    if key in SUR_PLACE_OU_A_DOMICILE:
        return "SUR_PLACE_OU_A_DOMICILE"
    return "SUR_PLACE"


# --- identifiers --------------------------------------------------------------------------------


def identifiant_externe_from_nom(nom: str) -> str:
    s = nom.strip().replace("-", "").replace(" ", "_")
    while "__" in s:
        s = s.replace("__", "_")
    return s


def identifiant_unique(source_code: str, identifiant_externe: str) -> str:
    return f"{source_code}_{identifiant_externe}".replace("/", "-").replace(" ", "")
