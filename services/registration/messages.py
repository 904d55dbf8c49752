"""Conversions between the contract's messages and Registration's domain values."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from herald.registration.v1 import device_pb2, registration_service_pb2
from herald.type.v1 import error_pb2, push_token_pb2
from services.registration import rules
from services.registration.audience import AudienceQuery
from services.registration.importer import ImportedDevice
from services.registration.invalidation import ItemProblem
from services.registration.model import APNS, FCM, WEB_PUSH, ChangeEntry, DeviceRecord, Token
from services.registration.tokens import TokenInput, encode_base64url, redact_token
from services.registration.validation import DeviceInput

FULL_VIEW = device_pb2.DEVICE_VIEW_FULL


def timestamp(ms: int) -> timestamp_pb2.Timestamp | None:
    if not ms:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


INVALID_TIME = -1  # a Timestamp outside what a record stores; validation rejects it
MAX_STORED_MS = (1 << 48) - 1  # records keep u48 milliseconds (year 10889)


def millis(stamp: timestamp_pb2.Timestamp, present: bool) -> int:
    """Milliseconds since the epoch, 0 when absent, INVALID_TIME when out of range.

    Out of range is before 1970 (a record stores unsigned times) or past what
    Timestamp allows or the record holds: validation turns it into a field violation
    before anything is written, instead of an INTERNAL error half-way."""
    if not present:
        return 0
    try:
        value = stamp.ToMilliseconds()
    except (ValueError, OverflowError):
        return INVALID_TIME
    if value < 0 or value > MAX_STORED_MS or stamp.nanos < 0 or stamp.nanos > 999_999_999:
        return INVALID_TIME
    return value


def token_input(message: push_token_pb2.PushToken, present: bool) -> TokenInput | None:
    if not present:
        return None
    kind = message.WhichOneof("kind")
    if kind == "apns":
        return TokenInput(APNS, apns_device_token=message.apns.device_token)
    if kind == "fcm":
        return TokenInput(FCM, fcm_registration_token=message.fcm.registration_token)
    if kind == "web_push":
        web = message.web_push
        return TokenInput(
            WEB_PUSH, web_endpoint=web.endpoint, web_p256dh=web.p256dh, web_auth=web.auth
        )
    return TokenInput(0)


def device_input(request: registration_service_pb2.RegisterDeviceRequest) -> DeviceInput:
    return DeviceInput(
        device_id=request.device_id,
        platform=request.platform,
        os_version=request.os_version,
        app_version=request.app_version,
        locale=request.locale,
        time_zone=request.time_zone,
        token=token_input(request.token, request.HasField("token")),
        authorization_status=request.authorization_status,
        apns_environment=request.apns_environment,
        user_id=request.user_id,
    )


def imported_device(item: registration_service_pb2.ImportedDevice) -> ImportedDevice:
    return ImportedDevice(
        DeviceInput(
            device_id=item.device_id,
            platform=item.platform,
            os_version=item.os_version,
            app_version=item.app_version,
            locale=item.locale,
            time_zone=item.time_zone,
            token=token_input(item.token, item.HasField("token")),
            authorization_status=item.authorization_status,
            apns_environment=item.apns_environment,
            user_id=item.user_id,
        ),
        millis(item.last_seen_time, item.HasField("last_seen_time")),
    )


def device_message(
    app_id: str, device_id: str, rec: DeviceRecord, view: int = 0
) -> device_pb2.Device:
    # Every RegisterDevice answers with one: nested messages as fields (see _token_fields).
    capability, provisional = rules.capability(rec)
    return device_pb2.Device(
        app_id=app_id,
        device_id=device_id,
        platform=rec.platform,  # type: ignore[arg-type]
        os_version=rec.os_version,
        app_version=rec.app_version,
        locale=rec.locale,
        time_zone=rec.time_zone,
        token=_token_fields(rec.token) if view == FULL_VIEW else None,  # type: ignore[arg-type]
        redacted_token=redact_token(rec.token),
        authorization_status=rec.authorization_status,  # type: ignore[arg-type]
        apns_environment=rec.apns_environment,  # type: ignore[arg-type]
        capability=capability,  # type: ignore[arg-type]
        provisional=provisional,
        user_id=rec.user_id,
        create_time=_timestamp_fields(rec.create_ms),  # type: ignore[arg-type]
        update_time=_timestamp_fields(rec.update_ms),  # type: ignore[arg-type]
        last_seen_time=_timestamp_fields(rec.last_seen_ms),  # type: ignore[arg-type]
        token_update_time=_timestamp_fields(rec.token_update_ms),  # type: ignore[arg-type]
    )


def _token_fields(token: Token | None) -> dict[str, Any] | None:
    """A PushToken as constructor fields: upb builds the nested messages in C, about
    twice as fast as building them as Python objects and copying them in."""
    if token is None:
        return None
    if token.kind == APNS:
        return {"apns": {"device_token": token.value}}
    if token.kind == FCM:
        return {"fcm": {"registration_token": token.value}}
    return {
        "web_push": {
            "endpoint": token.value,
            "p256dh": encode_base64url(token.p256dh),
            "auth": encode_base64url(token.auth),
        }
    }


def _timestamp_fields(ms: int) -> dict[str, int] | None:
    return {"seconds": ms // 1000, "nanos": ms % 1000 * 1_000_000} if ms else None


def token_change(app_id: str, device_id: str, entry: ChangeEntry) -> device_pb2.TokenChange:
    return device_pb2.TokenChange(
        change_id=entry.change_id,
        app_id=app_id,
        device_id=device_id,
        change_time=timestamp(entry.change_ms),
        kind=entry.kind,  # type: ignore[arg-type]
        from_user_id=entry.from_user,
        to_user_id=entry.to_user,
        redacted_token=entry.redacted_token,
        previous_redacted_token=entry.previous_redacted_token,
        reason=entry.reason,
        provider=entry.provider,  # type: ignore[arg-type]
        provider_time=timestamp(entry.provider_ms),
        authorization_status=entry.authorization_status,  # type: ignore[arg-type]
    )


def item_error(problem: ItemProblem) -> error_pb2.ItemError:
    return error_pb2.ItemError(
        code=problem.code,
        reason=problem.reason,
        message=problem.message,
        field_violations=[
            error_pb2.FieldViolation(field=v.field, description=v.description, reason=v.reason)
            for v in problem.violations
        ],
    )


def audience_query(query: registration_service_pb2.AudienceQuery) -> AudienceQuery:
    return AudienceQuery(
        app_ids=list(query.app_ids),
        platforms=list(query.platforms),
        reachability=query.reachability,
        app_versions=[(c.operator, c.version) for c in query.app_versions],
        locales=list(query.locales),
        time_zones=list(query.time_zones),
        user_bound_only=query.user_bound_only,
        user_ids=list(query.user_ids),
        seen_after_ms=millis(query.seen_after_time, query.HasField("seen_after_time")),
    )
