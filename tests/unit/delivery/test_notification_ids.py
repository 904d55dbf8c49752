"""Bulk notification ids are canonical random UUIDs, like uuid.uuid4()'s."""

from __future__ import annotations

import uuid

from services.delivery.notification_ids import new_ids


def test_ids_are_canonical_version_4_uuids_and_distinct():
    ids = new_ids(5000)
    assert len(ids) == len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text  # lower-case hex, dashes where str(UUID) puts them


def test_every_variant_digit_occurs():
    # 89ab: the variant's two fixed bits leave two random ones.
    assert {text[19] for text in new_ids(2000)} == set("89ab")


def test_zero_ids():
    assert new_ids(0) == []
