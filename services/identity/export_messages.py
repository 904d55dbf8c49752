"""Conversions for ExportUsers: the request's selector into the domain query, and
exported users into response messages."""

from __future__ import annotations

from herald.identity.v1 import identity_service_pb2, user_pb2
from services.core import attribute_filters
from services.identity import segments
from services.identity.export import ExportBatch, ExportQuery, RawIdentifier
from services.identity.identifiers import IdentifierKind
from services.identity.user_messages import identifier_to_proto, push_token_info, user_to_proto


def segment(message: user_pb2.Segment) -> segments.Segment:
    push = None
    if message.HasField("push_enabled"):
        push = segments.PushCondition(message.push_enabled.app_id, message.push_enabled.enabled)
    return segments.Segment(
        tuple(attribute_filters.compile_filter(item) for item in message.attribute_filters), push
    )


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
    batch: ExportBatch, full_tokens: bool
) -> identity_service_pb2.ExportUsersResponse:
    """The batch as sent (ExportUsers is the operator's: every app's tokens, limited to
    the request's `app_ids` by the export itself)."""
    return identity_service_pb2.ExportUsersResponse(
        users=[
            user_pb2.ExportedUser(
                user=user_to_proto(exported.user),
                push_tokens=[
                    push_token_info(token.device, token.app_name, full_tokens)
                    for token in exported.tokens
                ],
            )
            for exported in batch.users
        ],
        not_found=[identifier_to_proto(item.kind, item.value) for item in batch.not_found],
        cursor=batch.cursor,
    )
