"""Conversions between the user protobuf messages and the domain objects."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from herald.identity.v1 import user_pb2
from services.identity.app_messages import timestamp
from services.identity.identifiers import Identifier, IdentifierKind
from services.identity.registration_client import DeviceSnapshot
from services.identity.user_model import User
from services.identity.user_patches import UserInput
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


def user_to_proto(user: User) -> user_pb2.User:
    """The whole user (BatchGetUsers, which takes a read mask, writes its answer from the
    stored records: user_wire.py)."""
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
