"""ISBT 128 donation identifiers (ICCBBA ST-001) and the ISO/IEC 7064 Mod 37-2 check character.

A donation identifier here is facility code (5 characters) + 2-digit year + 6-digit sequence:
13 characters. The check character is printed boxed beside it and is not part of the identifier."""
from __future__ import annotations

import re

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
FACILITY_PATTERN = re.compile(r"^[A-NP-Z1-9][0-9A-Z]{4}$")
DIN_PATTERN = re.compile(r"^[A-NP-Z1-9][0-9A-Z]{4}[0-9]{2}[0-9]{6}$")
VIAL_PATTERN = re.compile(r"^([A-NP-Z1-9][0-9A-Z]{4}[0-9]{2}[0-9]{6})([0-9]{3})$")


def character_value(character: str) -> int:
    value = ALPHABET.find(character.upper())
    if value < 0 or len(character) != 1:
        raise ValueError(f"{character!r} is not in the ISO/IEC 7064 Mod 37-2 alphabet")
    return value


def mod37_2_check(text: str) -> str:
    """The ISO/IEC 7064 Mod 37-2 check character of ``text`` (0-9, A-Z, * alphabet).

    p = 0; for each character value v: p = ((p + v) * 2) mod 37; check = (38 - p) mod 37."""
    if not text:
        raise ValueError("nothing to check")
    p = 0
    for character in text:
        p = ((p + character_value(character)) * 2) % 37
    return ALPHABET[(38 - p) % 37]


def mod37_2_valid(text_with_check: str) -> bool:
    """True when the last character is the check character of the rest."""
    if len(text_with_check) < 2:
        return False
    try:
        return mod37_2_check(text_with_check[:-1]) == text_with_check[-1].upper()
    except ValueError:
        return False


def valid_facility_code(code: str) -> bool:
    return bool(FACILITY_PATTERN.match(code or ""))


def donation_identifier(facility_code: str, year: int, sequence: int) -> str:
    """``facility`` (5) + ``yy`` + ``nnnnnn``; refuses values that do not fit the layout."""
    if not valid_facility_code(facility_code):
        raise ValueError(f"facility code {facility_code!r} must be 5 characters: A-N, P-Z or 1-9, then 4 of 0-9/A-Z")
    if not 0 < sequence <= 999_999:
        raise ValueError("the sequence must be 1 to 999999")
    return f"{facility_code}{year % 100:02d}{sequence:06d}"


def vial_identifier(din: str, division: int) -> str:
    if not 0 < division <= 999:
        raise ValueError("the division must be 1 to 999")
    return f"{din}{division:03d}"


def din_of(identifier: str) -> str | None:
    """The 13-character donation identifier inside a DIN or vial identifier, else None."""
    identifier = (identifier or "").upper()
    if DIN_PATTERN.match(identifier):
        return identifier
    match = VIAL_PATTERN.match(identifier)
    return match.group(1) if match else None
