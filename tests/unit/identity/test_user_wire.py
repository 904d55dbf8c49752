"""BatchGetUsers' hand-written answer reads back as the messages protobuf builds.

The stored values come from the record writer itself (user_store._fields_of), so the
test covers the storage format the wire writer depends on, without Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from herald.identity.v1 import identity_service_pb2, user_pb2
from services.identity import user_wire
from services.identity.user_messages import user_to_proto
from services.identity.user_model import User
from services.identity.user_store import RECORD_FIELD_OF, VERSION_FIELD, _fields_of
from services.identity.users import _record_fields_for

ATTRIBUTES: dict[str, Any] = {
    "first_name": "Zoë 🚀",
    "city": "",
    "age": 31,
    "score": -2.5,
    "big": 2**60,
    "zero": 0,
    "vip": True,
    "churned": False,
    "note": None,
    "tags": ["a", 1, None, [], {"deep": [True]}],
    "address": {"street": 'Rue "Haute"\n', "geo": {"lat": 48.85, "lng": 2.35}},
    "empty_list": [],
    "empty_object": {},
    "a.b": "dotted key",
    "a": {"b": "nested value"},
    "long": "x" * 20_000,
}
KIM = User(
    external_id="kim",
    email="kim@example.com",
    phone="+33612345678",
    attributes=ATTRIBUTES,
    time_zone="Europe/Paris",
    locale="fr-FR",
    create_us=1_700_000_000_123_456,
    update_us=1_700_000_001_000_000,  # a whole second: no nanos field
    version=4,
)
BARE = User(external_id="bare", create_us=5, update_us=5, version=1)


def _stored(user: User, wanted: tuple[str, ...]) -> list[bytes | None]:
    """What read_records returns for `user`: HMGET of the wanted fields, then the version."""
    flat = _fields_of(user)
    record = {str(flat[i]): str(flat[i + 1]).encode() for i in range(0, len(flat), 2)}
    record[VERSION_FIELD] = str(user.version).encode()
    return [record.get(RECORD_FIELD_OF[name]) for name in wanted] + [record[VERSION_FIELD]]


def _answer(
    users: list[User], read_mask: list[str], missing: Sequence[str] = ()
) -> identity_service_pb2.BatchGetUsersResponse:
    """The wire-form answer, parsed as a caller's stub parses it."""
    fields = _record_fields_for(read_mask)
    found = [(user.external_id, _stored(user, fields)) for user in users]
    encoded = user_wire.batch_get_response(found, list(missing), read_mask, fields)
    return identity_service_pb2.BatchGetUsersResponse.FromString(encoded.data)


def _projected(user: User, read_mask: list[str]) -> user_pb2.User:
    """The read mask's semantics, cut out of the whole message: the external id always;
    "attributes.<key>" a top-level key (dots included)."""
    full = user_to_proto(user)
    expected = user_pb2.User(external_id=user.external_id)
    picked: dict[str, Any] = {}
    for path in read_mask:
        if path == "attributes":
            picked.update(user.attributes)
        elif path.startswith("attributes."):
            key = path.removeprefix("attributes.")
            if key in user.attributes:
                picked[key] = user.attributes[key]
        elif path in ("create_time", "update_time"):
            if full.HasField(path):  # type: ignore[arg-type]
                getattr(expected, path).CopyFrom(getattr(full, path))
        elif path != "external_id":
            setattr(expected, path, getattr(full, path))
    if picked:
        expected.attributes.update(picked)
    return expected


def test_without_a_mask_every_user_reads_back_as_user_to_proto():
    answer = _answer([KIM, BARE], [], missing=["gone", "élan"])
    assert list(answer.users) == [user_to_proto(KIM), user_to_proto(BARE)]
    assert list(answer.missing_external_ids) == ["gone", "élan"]
    assert answer.users[0].attributes["big"] == float(2**60)
    assert not answer.users[1].HasField("attributes")


@pytest.mark.parametrize(
    "read_mask",
    [
        ["attributes.first_name", "attributes.city"],
        ["attributes.city", "attributes.first_name", "attributes.city"],  # repeated path
        ["attributes.a.b"],  # the top-level key "a.b", not "b" inside "a"
        ["attributes.address", "attributes.tags", "attributes.note", "attributes.churned"],
        ["attributes", "attributes.first_name"],  # every attribute
        ["attributes.empty_object", "attributes.empty_list", "attributes.zero"],
        ["attributes.long"],  # a value longer than the pre-encoded lengths
        ["email", "phone", "time_zone", "locale"],
        ["create_time", "update_time", "external_id"],
        ["external_id"],
    ],
)
def test_a_mask_shows_exactly_its_fields(read_mask):
    (user,) = _answer([KIM], read_mask).users
    assert user == _projected(KIM, read_mask)


def test_a_mask_of_attributes_the_user_lacks_leaves_them_unset():
    users = _answer([KIM, BARE], ["attributes.unknown", "attributes.first_name"]).users
    assert dict(users[0].attributes) == {"first_name": "Zoë 🚀"}
    assert not users[1].HasField("attributes")
    assert not _answer([KIM], ["attributes.unknown"]).users[0].HasField("attributes")


def test_a_zero_time_stays_unset_as_in_user_to_proto():
    (user,) = _answer([User(external_id="old", update_us=7)], ["create_time", "update_time"]).users
    assert not user.HasField("create_time")
    assert user.update_time.ToMicroseconds() == 7
