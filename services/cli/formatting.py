"""Protobuf messages as people read them (short enum names, local-free ISO times,
durations in ms) and as scripts read them (JSON with the proto field names)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

if TYPE_CHECKING:  # the generated stubs' enum classes; no such name at run time
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

V = TypeVar("V", bound=int)


def to_json(message: Message) -> dict[str, Any]:
    """The message as the gRPC JSON mapping writes it, with the .proto field names
    (`app_id`, not `appId`) so scripts use the names docs/api.md uses. Fields left at
    their default are included, so `"created": false` is not missing."""
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _enum_prefix(enum: EnumDescriptor) -> str:
    # Protos follow buf STANDARD: every value starts with the enum's UPPER_SNAKE name.
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"


def enum_name(enum: EnumDescriptor, number: int) -> str:
    """PLATFORM_IOS -> IOS; an unknown number shows as the number."""
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = _enum_prefix(enum)
    return value.name[len(prefix) :] if value.name.startswith(prefix) else value.name


def enum_choices(enum: _EnumTypeWrapper[V]) -> dict[str, V]:
    """An enum's values as command-line choices: CAMPAIGN_STATE_SENDING -> "sending";
    the _UNSPECIFIED value (0) is no choice."""
    return {
        enum_name(enum.DESCRIPTOR, v.number).lower(): enum.Value(v.name)
        for v in enum.DESCRIPTOR.values
        if v.number
    }


def timestamp(value: timestamp_pb2.Timestamp) -> str:
    if not value.seconds and not value.nanos:
        return ""
    return value.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def duration(value: duration_pb2.Duration) -> str:
    millis = value.ToNanoseconds() / 1e6
    return f"{millis:.1f} ms" if millis < 10_000 else f"{millis / 1000:.1f} s"


def _scalar(field: FieldDescriptor, value: Any) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "yes" if value else "no"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    return str(value)


def rows(message: Message, prefix: str = "") -> list[tuple[str, str]]:
    """Every set field as (dotted path, text), in field order, for a two-column view."""
    out: list[tuple[str, str]] = []
    for field, value in message.ListFields():
        name = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out.extend((f"{name}.{k}", str(v)) for k, v in sorted(value.items()))
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for index, item in enumerate(value):
                    out.extend(rows(item, f"{name}[{index}]."))
            else:
                out.append((name, ", ".join(_scalar(field, v) for v in value)))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            out.extend(_message_rows(name, value))
        else:
            out.append((name, _scalar(field, value)))
    return out


def _message_rows(name: str, value: Message) -> list[tuple[str, str]]:
    if isinstance(value, timestamp_pb2.Timestamp):
        return [(name, timestamp(value))]
    if isinstance(value, duration_pb2.Duration):
        return [(name, duration(value))]
    if isinstance(value, struct_pb2.Struct):
        return [(name, json.dumps(MessageToDict(value), ensure_ascii=False, sort_keys=True))]
    return rows(value, name + ".")
