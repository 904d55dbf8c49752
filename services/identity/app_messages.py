"""Conversions between the app and API key protobuf messages and the domain objects."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from herald.identity.v1 import app_pb2, identity_service_pb2
from services.core.errors import FieldViolation, InvalidArgument
from services.identity.app_model import ApiKey, ApiKeyScope, App, LogoutPolicy, SecretMatch
from services.identity.apps import AppDraft

_POLICY_TO_PROTO = {
    LogoutPolicy.UNREGISTER: app_pb2.LOGOUT_POLICY_UNREGISTER,
    LogoutPolicy.KEEP_WITH_LAST_USER: app_pb2.LOGOUT_POLICY_KEEP_WITH_LAST_USER,
}
_POLICY_FROM_PROTO = {number: policy for policy, number in _POLICY_TO_PROTO.items()}
_MATCH_TO_PROTO = {
    SecretMatch.NONE: identity_service_pb2.SECRET_MATCH_NONE,
    SecretMatch.CURRENT: identity_service_pb2.SECRET_MATCH_CURRENT,
    SecretMatch.PREVIOUS: identity_service_pb2.SECRET_MATCH_PREVIOUS,
}
_SCOPE_TO_PROTO = {
    ApiKeyScope.REGISTER: app_pb2.API_KEY_SCOPE_REGISTER,
    ApiKeyScope.FULL: app_pb2.API_KEY_SCOPE_FULL,
}
_SCOPE_FROM_PROTO = {number: scope for scope, number in _SCOPE_TO_PROTO.items()}


def timestamp(micros: int) -> timestamp_pb2.Timestamp | None:
    """A Timestamp, or None for 0 (leaves the field unset)."""
    if not micros:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def logout_policy_to_proto(policy: LogoutPolicy) -> app_pb2.LogoutPolicy.ValueType:
    return _POLICY_TO_PROTO[policy]


def app_to_proto(app: App) -> app_pb2.App:
    return app_pb2.App(
        app_id=app.app_id,
        display_name=app.display_name,
        logout_policy=_POLICY_TO_PROTO[app.logout_policy],
        default_time_zone=app.default_time_zone,
        create_time=timestamp(app.create_us),
        update_time=timestamp(app.update_us),
        client_secret_create_time=timestamp(app.secret_create_us),
        previous_client_secret_expire_time=timestamp(app.previous_secret_expire_us),
    )


def app_draft(app: app_pb2.App, field: str = "app.logout_policy") -> AppDraft:
    policy = None
    if app.logout_policy != app_pb2.LOGOUT_POLICY_UNSPECIFIED:
        policy = _POLICY_FROM_PROTO.get(app.logout_policy)
        if policy is None:
            raise InvalidArgument(
                "the request has invalid fields",
                [FieldViolation(field, f"unknown logout policy {app.logout_policy}")],
            )
    return AppDraft(
        display_name=app.display_name,
        logout_policy=policy,
        default_time_zone=app.default_time_zone,
    )


def secret_match_to_proto(match: SecretMatch) -> identity_service_pb2.SecretMatch.ValueType:
    return _MATCH_TO_PROTO[match]


def api_key_scope_from_proto(scope: int) -> ApiKeyScope | None:
    return _SCOPE_FROM_PROTO.get(scope)  # type: ignore[call-overload]


def api_key_to_proto(key: ApiKey) -> app_pb2.ApiKey:
    return app_pb2.ApiKey(
        api_key_id=key.api_key_id,
        app_id=key.app_id,
        display_name=key.display_name,
        scope=_SCOPE_TO_PROTO[key.scope],
        expire_time=timestamp(key.expire_us),
        key_prefix=key.key_prefix,
        create_time=timestamp(key.create_us),
        revoke_time=timestamp(key.revoke_us),
        last_use_time=timestamp(key.last_use_us),
    )
