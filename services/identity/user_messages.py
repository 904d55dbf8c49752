"""Conversions between the user protobuf messages and the domain objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from herald.identity.v1 import user_pb2
from services.identity.app_messages import timestamp
from services.identity.identifiers import Identifier, IdentifierKind
from services.identity.registration_client import DeviceSnapshot
from services.identity.user_model import User
from services.identity.user_patches import ATTRIBUTE_PREFIX, UserInput
from services.identity.users import identifier_from


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(struct)


def dict_to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def user_input(user: user_pb2.User) -> UserInput:
    return UserInput(
        external_id=user.external_id,
        email=user.email,
        phone=user.phone,
        time_zone=user.time_zone,
        locale=user.locale,
        attributes=struct_to_dict(user.attributes) if user.HasField("attributes") else None,
    )


def identifier(message: user_pb2.UserIdentifier, field: str) -> Identifier:
    kind_name = message.WhichOneof("kind")
    kind = IdentifierKind(kind_name) if kind_name else None
    raw = getattr(message, kind_name) if kind_name else ""
    return identifier_from(kind, raw, field)


def identifier_to_proto(kind: IdentifierKind, value: str) -> user_pb2.UserIdentifier:
    return user_pb2.UserIdentifier(**{kind.value: value})


def user_to_proto(user: User, read_mask: Sequence[str] = ()) -> user_pb2.User:
    if read_mask:
        return _project(user, read_mask)
    message = user_pb2.User(
        external_id=user.external_id,
        email=user.email,
        phone=user.phone,
        time_zone=user.time_zone,
        locale=user.locale,
        create_time=timestamp(user.create_us),
        update_time=timestamp(user.update_us),
    )
    if user.attributes:
        message.attributes.CopyFrom(dict_to_struct(user.attributes))
    return message


def _project(user: User, read_mask: Sequence[str]) -> user_pb2.User:
    """Only the masked fields (the external id always), for BatchGetUsers' read_mask.

    Built directly rather than cut out of the full message: a campaign asks for a few
    fields of every user of its audience, and the attributes are the costly part."""
    fields: dict[str, Any] = {"external_id": user.external_id}
    picked_attributes: dict[str, Any] = {}
    for path in read_mask:
        if path.startswith(ATTRIBUTE_PREFIX):
            key = path[len(ATTRIBUTE_PREFIX) :]
            if key in user.attributes:
                picked_attributes[key] = user.attributes[key]
        elif path == "attributes":
            picked_attributes.update(user.attributes)
        elif path == "create_time":
            fields[path] = timestamp(user.create_us)
        elif path == "update_time":
            fields[path] = timestamp(user.update_us)
        elif path != "external_id":
            fields[path] = getattr(user, path)  # email, phone, time_zone, locale
    projected = user_pb2.User(**fields)
    if picked_attributes:
        projected.attributes.CopyFrom(dict_to_struct(picked_attributes))
    return projected


def push_token_info(
    device: DeviceSnapshot, app_name: str, full_tokens: bool
) -> user_pb2.PushTokenInfo:
    info = user_pb2.PushTokenInfo(
        app_id=device.app_id,
        app_name=app_name,
        device_id=device.device_id,
        platform=device.platform,
        redacted_token=device.redacted_token,
        capability=device.capability,
        provisional=device.provisional,
        last_seen_time=timestamp(device.last_seen_us),
    )
    if full_tokens and device.token is not None:
        info.token.CopyFrom(device.token)
    return info
