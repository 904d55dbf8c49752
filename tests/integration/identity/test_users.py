"""Users: upsert, lookup by each identifier, uniqueness, update masks, batches."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from redis.asyncio import Redis

from herald.identity.v1 import identity_service_pb2, identity_service_pb2_grpc, user_pb2
from services.core.status import parse_error
from tests.integration.identity.conftest import redis_snapshot

pb = identity_service_pb2


def _attributes(**values) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


async def _upsert(identity, **fields) -> pb.UpsertUserResponse:
    mask = fields.pop("mask", None)
    merge = fields.pop("merge", False)
    return await identity.UpsertUser(
        pb.UpsertUserRequest(
            user=user_pb2.User(**fields),
            update_mask=field_mask_pb2.FieldMask(paths=mask or []),
            merge_attributes=merge,
        )
    )


async def _lookup(identity, **identifier) -> user_pb2.User:
    answer = await identity.LookupUser(
        pb.LookupUserRequest(identifier=user_pb2.UserIdentifier(**identifier))
    )
    return answer.user


async def _error(call) -> tuple[grpc.StatusCode, str, set[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = parse_error(caught.value)
    return details.code, details.reason, {field for field, _ in details.violations}


async def test_upsert_creates_then_updates_and_lookup_finds_by_each_identifier(identity):
    created = await _upsert(
        identity,
        external_id="kim",
        email="Kim@Example.COM",
        phone="+33 6 12-34-56-78",
        time_zone="Europe/Paris",
        locale="fr-FR",
        attributes=_attributes(plan="gold", age=31),
    )
    assert created.created
    assert created.user.email == "kim@example.com"
    assert created.user.phone == "+33612345678"

    again = await _upsert(identity, external_id="kim", locale="fr-CA")
    assert not again.created
    assert again.user.locale == "fr-CA"
    assert again.user.email == "kim@example.com"
    assert again.user.attributes["plan"] == "gold"

    assert (await _lookup(identity, external_id="kim")).locale == "fr-CA"
    assert (await _lookup(identity, email="KIM@example.com")).external_id == "kim"
    assert (await _lookup(identity, phone="0033612345678")).external_id == "kim"
    got = await identity.GetUser(pb.GetUserRequest(external_id="kim"))
    assert got.user.time_zone == "Europe/Paris"


async def test_lookup_of_unknown_users_and_missing_identifier(identity):
    assert (await _error(_lookup(identity, email="nobody@example.com")))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    code, reason, fields = await _error(
        identity.LookupUser(pb.LookupUserRequest(identifier=user_pb2.UserIdentifier()))
    )
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        {"identifier"},
    )
    code, _, fields = await _error(_lookup(identity, phone="0612345678"))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, {"identifier.phone"})


async def test_email_and_phone_are_unique_among_users(identity, redis: Redis):
    await _upsert(identity, external_id="charlie", email="c@example.com", phone="+14155550100")
    before = await redis_snapshot(redis)

    code, reason, _ = await _error(_upsert(identity, external_id="kim", email="C@example.com"))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "USER_EMAIL_TAKEN")
    code, reason, _ = await _error(
        _upsert(identity, external_id="kim", email="k@example.com", phone="+1 415 555 0100")
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "USER_PHONE_TAKEN")
    # Nothing of the rejected calls remains: not the user, not k@example.com's reservation.
    assert await redis_snapshot(redis) == before

    # Once Charlie changes address, the old one is free for Kim.
    await _upsert(identity, external_id="charlie", email="charlie@example.com")
    kim = await _upsert(identity, external_id="kim", email="c@example.com")
    assert kim.user.email == "c@example.com"
    assert (await _lookup(identity, email="c@example.com")).external_id == "kim"
    assert (await _lookup(identity, email="charlie@example.com")).external_id == "charlie"


async def test_a_stale_reservation_is_repaired_from_the_user_record(identity, redis: Redis):
    # A crash left "ghost@example.com" reserved for a user that never got it.
    await redis.set("idn:email:ghost@example.com", "ghost|1")
    with pytest.raises(grpc.aio.AioRpcError):
        await _lookup(identity, email="ghost@example.com")
    assert await redis.get("idn:email:ghost@example.com") is None
    await redis.set("idn:email:ghost@example.com", "ghost|1")
    taken = await _upsert(identity, external_id="kim", email="ghost@example.com")
    assert taken.user.email == "ghost@example.com"


async def test_update_mask_writes_exactly_its_paths(identity):
    await _upsert(
        identity,
        external_id="kim",
        email="kim@example.com",
        locale="fr-FR",
        attributes=_attributes(plan="gold", city="Lyon", age=31),
    )
    updated = await identity.UpdateUser(
        pb.UpdateUserRequest(
            user=user_pb2.User(
                external_id="kim",
                locale="en-GB",
                email="",
                attributes=_attributes(plan="silver", city="ignored"),
            ),
            update_mask=field_mask_pb2.FieldMask(
                paths=["email", "attributes.plan", "attributes.age"]
            ),
        )
    )
    user = updated.user
    assert user.email == ""
    assert user.locale == "fr-FR"
    assert dict(user.attributes) == {"plan": "silver", "city": "Lyon"}
    # The cleared e-mail is free again.
    await _upsert(identity, external_id="other", email="kim@example.com")


async def test_merge_attributes_sets_and_removes_keys(identity):
    await _upsert(identity, external_id="kim", attributes=_attributes(a=1, b=2))
    merged = await _upsert(
        identity, external_id="kim", attributes=_attributes(b=None, c=3), merge=True
    )
    assert dict(merged.user.attributes) == {"a": 1, "c": 3}
    replaced = await _upsert(identity, external_id="kim", attributes=_attributes(z=1))
    assert dict(replaced.user.attributes) == {"z": 1}


async def test_bad_input_lists_every_violation_and_writes_nothing(identity, redis: Redis):
    await _upsert(identity, external_id="kim")
    before = await redis_snapshot(redis)
    code, reason, fields = await _error(
        _upsert(
            identity,
            external_id="x" * 300,
            email="not-an-email",
            phone="12",
            time_zone="Mars/Base",
            locale="??",
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert fields == {
        "user.external_id",
        "user.email",
        "user.phone",
        "user.time_zone",
        "user.locale",
    }

    big = _attributes(**{f"key{n}": n for n in range(101)})
    code, reason, fields = await _error(_upsert(identity, external_id="kim", attributes=big))
    assert (reason, fields) == ("ATTRIBUTES_TOO_LARGE", {"user.attributes"})
    huge = _attributes(blob="x" * (17 * 1024))
    assert (await _error(_upsert(identity, external_id="kim", attributes=huge)))[
        1
    ] == "ATTRIBUTES_TOO_LARGE"
    # Merging keys one call at a time cannot grow past the limit either.
    half = _attributes(blob="x" * (9 * 1024))
    await _upsert(identity, external_id="kim", attributes=half)
    before = await redis_snapshot(redis)
    other = _attributes(other="y" * (9 * 1024))
    assert (await _error(_upsert(identity, external_id="kim", attributes=other, merge=True)))[
        1
    ] == "ATTRIBUTES_TOO_LARGE"

    for paths in (["external_id"], ["nickname"], []):
        code, reason, _ = await _error(
            identity.UpdateUser(
                pb.UpdateUserRequest(
                    user=user_pb2.User(external_id="kim", locale="fr-FR"),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )
        )
        assert reason == "INVALID_UPDATE_MASK"
    code, reason, _ = await _error(
        identity.UpdateUser(
            pb.UpdateUserRequest(
                user=user_pb2.User(external_id="ghost", locale="fr-FR"),
                update_mask=field_mask_pb2.FieldMask(paths=["locale"]),
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")
    assert await redis_snapshot(redis) == before


async def test_list_users_pages_in_external_id_order(identity):
    ids = [f"user-{n:03d}" for n in range(25)]
    for external_id in reversed(ids):
        await _upsert(identity, external_id=external_id)
    seen: list[str] = []
    token = ""
    while True:
        page = await identity.ListUsers(pb.ListUsersRequest(page_size=10, page_token=token))
        seen.extend(user.external_id for user in page.users)
        token = page.next_page_token
        if not token:
            break
    assert seen == ids


async def test_batch_get_users_in_request_order_with_a_read_mask(identity):
    await _upsert(
        identity,
        external_id="a",
        email="a@example.com",
        attributes=_attributes(first_name="Ann", plan="x"),
    )
    await _upsert(identity, external_id="b", time_zone="Europe/Paris")
    answer = await identity.BatchGetUsers(
        pb.BatchGetUsersRequest(
            external_ids=["b", "missing", "a"],
            read_mask=field_mask_pb2.FieldMask(paths=["attributes.first_name", "time_zone"]),
        )
    )
    assert [user.external_id for user in answer.users] == ["b", "a"]
    assert list(answer.missing_external_ids) == ["missing"]
    assert answer.users[0].time_zone == "Europe/Paris"
    assert dict(answer.users[1].attributes) == {"first_name": "Ann"}
    assert answer.users[1].email == ""

    code, reason, _ = await _error(
        identity.BatchGetUsers(pb.BatchGetUsersRequest(external_ids=[str(n) for n in range(1001)]))
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")


async def test_batch_get_users_names_each_unusable_id_and_answers_nothing(identity):
    await _upsert(identity, external_id="a")
    code, reason, fields = await _error(
        identity.BatchGetUsers(
            pb.BatchGetUsersRequest(external_ids=["a", "x" * 256, "b\x07", "é" * 127])
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    # 127 × "é" is 254 bytes of UTF-8: usable; 256 ASCII bytes and a control
    # character are not.
    assert fields == {"external_ids[1]", "external_ids[2]"}


async def test_batch_get_users_answers_a_blank_id_as_no_users(identity):
    # Registration binds devices to any user id text, blank included: a campaign
    # asking for its audience's users must not fail on one.
    await _upsert(identity, external_id="a")
    answer = await identity.BatchGetUsers(pb.BatchGetUsersRequest(external_ids=["  ", "a", ""]))
    assert [user.external_id for user in answer.users] == ["a"]
    assert list(answer.missing_external_ids) == ["  ", ""]


async def test_batch_get_users_masks_and_full_answers_agree_with_get_user(identity):
    await _upsert(
        identity,
        external_id="c",
        email="c@example.com",
        phone="+33612345678",
        locale="fr-FR",
        attributes=_attributes(first_name="Cy", tier=3),
    )
    full = (await identity.GetUser(pb.GetUserRequest(external_id="c"))).user
    unmasked = await identity.BatchGetUsers(pb.BatchGetUsersRequest(external_ids=["c"]))
    assert list(unmasked.users) == [full]
    masked = await identity.BatchGetUsers(
        pb.BatchGetUsersRequest(
            external_ids=["c"],
            read_mask=field_mask_pb2.FieldMask(
                paths=["email", "phone", "locale", "create_time", "attributes"]
            ),
        )
    )
    (user,) = masked.users
    assert (user.external_id, user.email, user.phone, user.locale) == (
        "c",
        "c@example.com",
        "+33612345678",
        "fr-FR",
    )
    assert user.create_time == full.create_time
    assert not user.HasField("update_time")
    assert user.attributes == full.attributes


async def test_batch_get_users_attribute_paths_name_top_level_keys_of_any_json_type(identity):
    stored = {
        "a.b": "dotted key",
        "a": {"b": "nested value"},
        "tags": ["x", 2, True, {"deep": []}],
        "vip": False,
        "score": 0,
        "motto": 'Zoë said "hi"\n',
    }
    await _upsert(identity, external_id="zoe", attributes=_attributes(**stored))
    await _upsert(identity, external_id="plain", time_zone="Asia/Tokyo")

    async def masked(*paths: str) -> list[user_pb2.User]:
        answer = await identity.BatchGetUsers(
            pb.BatchGetUsersRequest(
                external_ids=["zoe", "plain"], read_mask=field_mask_pb2.FieldMask(paths=paths)
            )
        )
        return list(answer.users)

    zoe, plain = await masked("attributes.a.b", "attributes.tags", "attributes.vip", "attributes.x")
    assert zoe.attributes == _attributes(
        **{"a.b": "dotted key", "tags": stored["tags"], "vip": False}
    )
    assert not plain.HasField("attributes")
    assert (zoe.time_zone, zoe.create_time.seconds) == ("", 0)  # not in the mask

    zoe, plain = await masked("attributes", "attributes.vip")
    full = (await identity.GetUser(pb.GetUserRequest(external_id="zoe"))).user
    assert zoe.attributes == full.attributes == _attributes(**stored)
    assert (plain.external_id, plain.HasField("attributes")) == ("plain", False)

    zoe, plain = await masked("attributes.score", "attributes.motto", "time_zone")
    assert dict(zoe.attributes) == {"score": 0, "motto": stored["motto"]}
    assert zoe.attributes.fields["score"].WhichOneof("kind") == "number_value"  # not unset
    assert plain.time_zone == "Asia/Tokyo"


async def test_batch_get_users_across_every_shard_keeps_the_request_order(identity):
    ids = [f"user-{n}" for n in range(300)]
    for external_id in ids[::3]:  # a third exist
        await _upsert(identity, external_id=external_id, attributes=_attributes(n=external_id))
    asked = ids[::-1]
    answer = await identity.BatchGetUsers(
        pb.BatchGetUsersRequest(
            external_ids=asked, read_mask=field_mask_pb2.FieldMask(paths=["attributes.n"])
        )
    )
    existing = set(ids[::3])
    assert [user.external_id for user in answer.users] == [i for i in asked if i in existing]
    assert all(user.attributes["n"] == user.external_id for user in answer.users)
    assert list(answer.missing_external_ids) == [i for i in asked if i not in existing]

    nobody = await identity.BatchGetUsers(pb.BatchGetUsersRequest(external_ids=["p", "q"]))
    assert (list(nobody.users), list(nobody.missing_external_ids)) == ([], ["p", "q"])


async def test_batch_get_users_refuses_an_unknown_mask_path_or_no_ids(identity, redis: Redis):
    before = await redis_snapshot(redis)
    code, reason, fields = await _error(
        identity.BatchGetUsers(
            pb.BatchGetUsersRequest(
                external_ids=["a"],
                read_mask=field_mask_pb2.FieldMask(paths=["email", "password", "attributes."]),
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert fields == {"read_mask.paths[1]", "read_mask.paths[2]"}
    code, reason, fields = await _error(identity.BatchGetUsers(pb.BatchGetUsersRequest()))
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "BATCH_TOO_LARGE",
        {"external_ids"},
    )
    assert await redis_snapshot(redis) == before


async def test_delete_user_without_devices_frees_its_identifiers(stack):
    identity = identity_service_pb2_grpc.IdentityServiceStub(stack["identity"])
    await _upsert(identity, external_id="kim", email="kim@example.com")
    deleted = await identity.DeleteUser(pb.DeleteUserRequest(external_id="kim"))
    assert deleted.deleted
    assert deleted.unbound_device_count == 0
    assert (await _error(identity.GetUser(pb.GetUserRequest(external_id="kim"))))[
        1
    ] == "USER_NOT_FOUND"
    assert (await _error(_lookup(identity, email="kim@example.com")))[1] == "USER_NOT_FOUND"
    missing = await identity.DeleteUser(pb.DeleteUserRequest(external_id="kim", allow_missing=True))
    assert not missing.deleted
    assert (await _error(identity.DeleteUser(pb.DeleteUserRequest(external_id="kim"))))[
        1
    ] == "USER_NOT_FOUND"


async def test_an_invalid_export_lists_every_violation(identity):
    from herald.type.v1 import filter_pb2

    request = pb.ExportUsersRequest(
        selector=pb.ExportSelector(
            segment=user_pb2.Segment(
                attribute_filters=[
                    filter_pb2.AttributeFilter(attribute="plan"),
                    filter_pb2.AttributeFilter(attribute="", exists=True),
                ]
            )
        ),
        batch_size=6000,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in identity.ExportUsers(request):
            pass
    details = parse_error(caught.value)
    assert details.reason == "INVALID_ARGUMENT"
    assert {field for field, _ in details.violations} == {
        "selector.segment.attribute_filters[0]",
        "selector.segment.attribute_filters[1].attribute",
        "batch_size",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in identity.ExportUsers(pb.ExportUsersRequest()):
            pass
    assert {field for field, _ in parse_error(caught.value).violations} == {"selector"}
    ids = pb.ExportSelector(
        identifiers=pb.UserIdentifierList(
            identifiers=[user_pb2.UserIdentifier(email="bad"), user_pb2.UserIdentifier()]
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in identity.ExportUsers(pb.ExportUsersRequest(selector=ids)):
            pass
    assert {field for field, _ in parse_error(caught.value).violations} == {
        "selector.identifiers.identifiers[0].email",
        "selector.identifiers.identifiers[1]",
    }
