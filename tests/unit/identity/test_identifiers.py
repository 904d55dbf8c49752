"""E-mail and phone normalisation: one identifier, whatever way it was typed."""

from __future__ import annotations

import pytest

from services.identity.identifiers import external_id_problem, normalise_email, normalise_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Kim@Example.COM", "kim@example.com"),
        ("  ana@mail.example.org ", "ana@mail.example.org"),
        ("no-at-sign", None),
        ("two@@example.com", None),
        ("nodot@example", None),
        ("spaces in@example.com", None),
    ],
)
def test_emails_are_lowercased_and_checked(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33612345678", "+33612345678"),
        ("+33 6 12-34-56-78", "+33612345678"),
        ("0033 (6) 12.34.56.78", "+33612345678"),
        ("+1 415 555 0100", "+14155550100"),
        ("0612345678", None),  # no country code: never guessed
        ("+0612345678", None),
        ("+12", None),
        ("+1234567890123456", None),  # longer than E.164 allows
        ("+33 6 12 AB", None),
    ],
)
def test_phones_become_e164(raw, expected):
    assert normalise_phone(raw) == expected


def test_external_ids_are_bounded():
    assert external_id_problem("kim") == ""
    assert external_id_problem("") == "is required"
    assert "255 bytes in UTF-8" in external_id_problem("x" * 256)
    assert external_id_problem("x" * 255) == ""
    # Counted in bytes, like Registration's user_id: 128 "é" are 256 bytes.
    assert external_id_problem("é" * 127) == ""
    assert "255 bytes" in external_id_problem("é" * 128)
    assert external_id_problem("a\nb")
