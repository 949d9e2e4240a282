"""The pseudonym rule: a patient or operator id must name no one.

The record, its exports and the day report hold the patient only by the id typed at the start of
a session, so that id must not be personal data itself. Refused whatever the clinic's pattern
says: what looks like an e-mail address, a French social-security number (NIR, 13 digits or 15 with
its key, starting 1 or 2, spaces allowed) or a name with a birth date. Then the id must match the
clinic's ``pseudonym_pattern`` (controller/config.py). What merely looks like a surname ("Dupont",
"Jean.Dupont") is let through with a warning: a practice's own ids can look like that, and only the
clinician knows. Messages say what the value looks like, never the value: they end up in logs.
"""

from __future__ import annotations

import re
from typing import Literal

from controller.config import PSEUDONYM_PATTERN
from controller.errors import GivreError

Role = Literal["patient", "operator"]

EMAIL = re.compile(r"\S@\S")
# Sex (1/2), year, month, department (2 digits, or 2A/2B for Corsica), commune, order number, then the optional key.
NIR = re.compile(r"(?<![0-9])[12][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{6}(?:[0-9]{2})?(?![0-9])", re.IGNORECASE)
NIR_SEPARATORS = re.compile(r"[\s._-]")
_DAY, _MONTH, _YEAR, _SEP = r"(?:0[1-9]|[12][0-9]|3[01])", r"(?:0[1-9]|1[0-2])", r"(?:19|20)[0-9]{2}", r"[-_./]?"
BIRTH_DATE = re.compile(rf"(?<![0-9])(?:{_YEAR}{_SEP}{_MONTH}{_SEP}{_DAY}|{_DAY}{_SEP}{_MONTH}{_SEP}{_YEAR})(?![0-9])")
NAME_PART = re.compile(r"[^\W\d_]{2,}")  # two letters in a row: the start of a name
SURNAME = re.compile(r"[^\W\d_]{2,}(?:[._-][^\W\d_]{2,})*")  # letters only, maybe joined: Dupont, DUPONT, jean.dupont


class PseudonymRefused(GivreError):
    """An id that may not be recorded: it looks like personal data or breaks the clinic's pattern."""


def personal_data_kind(value: str) -> str | None:
    """What personal data ``value`` looks like, or None: the built-in refusals, whatever the clinic's pattern."""
    if EMAIL.search(value):
        return "looks like an e-mail address"
    if NIR.search(NIR_SEPARATORS.sub("", value)):
        return "looks like a French social-security number (NIR)"
    if BIRTH_DATE.search(value) and NAME_PART.search(value):
        return "looks like a name with a birth date"
    return None


def looks_like_surname(value: str) -> bool:
    """Letters only, capitalised (Dupont, DUPONT) or in parts (jean.dupont): a name, unless the practice's ids look so."""
    return SURNAME.fullmatch(value) is not None and (value[0].isupper() or len(re.split(r"[._-]", value)) > 1)


def check_pseudonym(field: str, value: str, role: Role, pattern: str = PSEUDONYM_PATTERN) -> str | None:
    """Raise PseudonymRefused, in one line naming ``field`` (never the value), if ``value`` may not be
    recorded as a ``role``'s id; return a one-line warning if it looks like a surname; None if it is fine."""
    allowed = "allowed: an id that names no one" + (
        ", letters, digits, '.', '_' or '-' (1-40, no spaces)" if pattern == PSEUDONYM_PATTERN else f", matching {pattern!r}")
    action = f"Use the practice's pseudonymous {role} number (never a name, birth date, e-mail or social-security number)"
    kind = personal_data_kind(value)
    if kind is None and re.fullmatch(pattern, value) is None:
        kind = "is empty" if not value else ("has a space (a name?)" if re.search(r"\s", value) else
                                             "is not in the practice's pseudonym format")
    if kind is not None:
        raise PseudonymRefused(f"{field}: the {role} id {kind}; {allowed}", action)
    if looks_like_surname(value):
        return f"{field}: the {role} id looks like a surname; if it is a name, start again with the practice's pseudonymous {role} number"
    return None
