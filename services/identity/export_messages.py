"""Conversions for ExportUsers: the request's selector into the domain query, and
exported users into response messages."""

from __future__ import annotations

from google.protobuf import json_format

from herald.identity.v1 import identity_service_pb2, user_pb2
from herald.type.v1 import filter_pb2
from services.identity import segments
from services.identity.export import ExportBatch, ExportQuery, RawIdentifier
from services.identity.identifiers import IdentifierKind
from services.identity.user_messages import identifier_to_proto, push_token_info, user_to_proto

_COMPARISONS = {
    filter_pb2.COMPARISON_OPERATOR_EQUAL: segments.Comparison.EQUAL,
    filter_pb2.COMPARISON_OPERATOR_NOT_EQUAL: segments.Comparison.NOT_EQUAL,
    filter_pb2.COMPARISON_OPERATOR_LESS: segments.Comparison.LESS,
    filter_pb2.COMPARISON_OPERATOR_LESS_OR_EQUAL: segments.Comparison.LESS_OR_EQUAL,
    filter_pb2.COMPARISON_OPERATOR_GREATER: segments.Comparison.GREATER,
    filter_pb2.COMPARISON_OPERATOR_GREATER_OR_EQUAL: segments.Comparison.GREATER_OR_EQUAL,
}


def _condition(message: filter_pb2.AttributeFilter) -> segments.AttributeCondition:
    which = message.WhichOneof("condition")
    kind = segments.ConditionKind(which) if which else None
    value: object = None
    comparison = None
    if kind is segments.ConditionKind.EQUALS:
        value = json_format.MessageToDict(message.equals)
    elif kind is segments.ConditionKind.IN_VALUES:
        value = tuple(json_format.MessageToDict(item) for item in message.in_values.values)
    elif kind is segments.ConditionKind.EXISTS:
        value = message.exists
    elif kind is segments.ConditionKind.NUMBER:
        value = message.number.value
        comparison = _COMPARISONS.get(message.number.operator)
    elif kind is segments.ConditionKind.BEFORE_TIME:
        value = message.before_time.ToMicroseconds()
    elif kind is segments.ConditionKind.AFTER_TIME:
        value = message.after_time.ToMicroseconds()
    return segments.AttributeCondition(message.attribute, kind, value, comparison)


def segment(message: user_pb2.Segment) -> segments.Segment:
    push = None
    if message.HasField("push_enabled"):
        push = segments.PushCondition(message.push_enabled.app_id, message.push_enabled.enabled)
    return segments.Segment(tuple(_condition(item) for item in message.attribute_filters), push)


def _raw_identifier(message: user_pb2.UserIdentifier) -> RawIdentifier:
    which = message.WhichOneof("kind")
    if which is None:
        return RawIdentifier(None, "")
    return RawIdentifier(IdentifierKind(which), getattr(message, which))


def export_query(request: identity_service_pb2.ExportUsersRequest) -> ExportQuery:
    which = request.selector.WhichOneof("kind")
    identifiers = None
    if which == "identifiers":
        identifiers = tuple(
            _raw_identifier(item) for item in request.selector.identifiers.identifiers
        )
    return ExportQuery(
        identifiers=identifiers,
        segment=segment(request.selector.segment) if which == "segment" else None,
        app_ids=tuple(request.app_ids),
        full_tokens=request.include_full_tokens,
        batch_size=request.batch_size,
        cursor=request.cursor,
    )


def export_response(
    batch: ExportBatch, full_tokens: bool, only_app: str = ""
) -> identity_service_pb2.ExportUsersResponse:
    """The batch as sent; `only_app` keeps just that app's tokens (an app key's view)."""
    return identity_service_pb2.ExportUsersResponse(
        users=[
            user_pb2.ExportedUser(
                user=user_to_proto(exported.user),
                push_tokens=[
                    push_token_info(token.device, token.app_name, full_tokens)
                    for token in exported.tokens
                    if not only_app or token.device.app_id == only_app
                ],
            )
            for exported in batch.users
        ],
        not_found=[identifier_to_proto(item.kind, item.value) for item in batch.not_found],
        cursor=batch.cursor,
    )
