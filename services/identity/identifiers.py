"""How users are found: external id, e-mail (case-insensitive) and phone (E.164).

Normalisation happens once, here, on every way in (UpsertUser, LookupUser, export
lists), so "Ana@Example.com" and "ana@example.com", or "+33 6 12-34-56-78" and
"+33612345678", are the same identifier everywhere.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# Bytes of UTF-8, the same limit as Registration's user_id (validation.MAX_USER_ID):
# a user Identity accepts can always be bound to a device.
MAX_EXTERNAL_ID = 255
MAX_EMAIL = 254
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
_PHONE_PUNCTUATION = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"\+[1-9][0-9]{5,14}")


class IdentifierKind(enum.StrEnum):
    EXTERNAL_ID = "external_id"
    EMAIL = "email"
    PHONE = "phone"


@dataclass(frozen=True)
class Identifier:
    kind: IdentifierKind
    value: str  # normalised


_CONTROL = re.compile("[\x00-\x1f]")  # one C scan: BatchGetUsers checks 1,000 ids a call


def external_id_problem(external_id: str) -> str:
    """Why an external id is unusable, or "" when it is fine."""
    if not external_id.strip():
        return "is required"
    if len(external_id.encode()) > MAX_EXTERNAL_ID:
        return f"must be at most {MAX_EXTERNAL_ID} bytes in UTF-8"
    if _CONTROL.search(external_id):
        return "must not contain control characters"
    return ""


def normalise_email(raw: str) -> str | None:
    """The lowercase address, or None if it is not an e-mail address."""
    email = raw.strip().lower()
    if len(email) > MAX_EMAIL or _EMAIL.fullmatch(email) is None:
        return None
    return email


def normalise_phone(raw: str) -> str | None:
    """ "+<country><number>" with digits only, or None if it cannot be E.164.

    Spaces, dashes, dots, slashes and parentheses are dropped and a leading "00" is read
    as "+". A number without its country code is rejected: guessing the country would
    merge different people's numbers.
    """
    phone = _PHONE_PUNCTUATION.sub("", raw)
    if phone.startswith("00"):
        phone = "+" + phone[2:]
    return phone if _E164.fullmatch(phone) else None


def normalise(kind: IdentifierKind, raw: str) -> str | None:
    if kind is IdentifierKind.EMAIL:
        return normalise_email(raw)
    if kind is IdentifierKind.PHONE:
        return normalise_phone(raw)
    return None if external_id_problem(raw) else raw
