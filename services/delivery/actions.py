"""The versioned table from provider answers to actions (docs/delivery-errors.md).

Every APNs reason, FCM errorCode and Web Push status maps to one Action; unknown
answers fall back by HTTP status class. `decide()` is pure: the Dispatcher performs
the side effects (token invalidation, circuit breaker, retry scheduling).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

ACTION_TABLE_VERSION = "2026-11-1"


class Action(enum.Enum):
    DELIVERED = "DELIVERED"
    DELETE_TOKEN = "DELETE_TOKEN"  # noqa: S105 - an action name, not a secret
    RETRY = "RETRY"
    QUARANTINE = "QUARANTINE"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Rule:
    action: Action
    why: str
    # QUARANTINE: True when every send with this credential would fail the same way
    # (opens the circuit at once); False for token-level configuration mismatches.
    credential_wide: bool = False
    min_retry_seconds: float = 0.0  # a floor for the backoff (FCM INTERNAL: 10 s)
    default_retry_after: float | None = None  # when the provider gives no Retry-After


def _r(action: Action, why: str, **kw: float | bool | None) -> Rule:
    return Rule(action, why, **kw)  # type: ignore[arg-type]


D, X, R, Q, F = Action.DELIVERED, Action.DELETE_TOKEN, Action.RETRY, Action.QUARANTINE, Action.FAIL

APNS: dict[str, Rule] = {
    "BadCollapseId": _r(F, "apns-collapse-id over 64 bytes: a payload error"),
    "BadDeviceToken": _r(
        X,
        "the token is not valid for this environment (deleted only when the token's environment is the one sent to)",
    ),
    "BadExpirationDate": _r(F, "bad apns-expiration: a payload error"),
    "BadMessageId": _r(F, "bad apns-id: a sender bug"),
    "BadPriority": _r(F, "bad apns-priority: a payload error"),
    "BadTopic": _r(F, "bad apns-topic for the push type: a payload error"),
    "DeviceTokenNotForTopic": _r(
        Q, "the token belongs to another bundle id: misconfiguration, never delete"
    ),
    "DuplicateHeaders": _r(F, "duplicated headers: a sender bug"),
    "IdleTimeout": _r(R, "the connection idled out; resend"),
    "InvalidPushType": _r(F, "bad apns-push-type: a payload error"),
    "MissingDeviceToken": _r(F, "no token in the path: a sender bug"),
    "MissingTopic": _r(Q, "no topic: the credential has no bundle id", credential_wide=True),
    "PayloadEmpty": _r(F, "empty body: a payload error"),
    "TopicDisallowed": _r(Q, "the team may not push to this topic", credential_wide=True),
    "BadCertificate": _r(Q, "the certificate is invalid", credential_wide=True),
    "BadCertificateEnvironment": _r(
        Q, "the certificate is for the other environment", credential_wide=True
    ),
    "ExpiredProviderToken": _r(R, "the provider token is older than an hour: re-minted and resent"),
    "Forbidden": _r(Q, "APNs refused the credential", credential_wide=True),
    "InvalidProviderToken": _r(Q, "the key, key id or team id is wrong", credential_wide=True),
    "MissingProviderToken": _r(
        Q, "no provider token and no client certificate", credential_wide=True
    ),
    "UnrelatedKeyIdInToken": _r(
        Q, "the key belongs to another team than the connection's", credential_wide=True
    ),
    "BadEnvironmentKeyIdInToken": _r(
        Q, "the key is not enabled for this environment", credential_wide=True
    ),
    "BadPath": _r(F, "bad request path: a sender bug"),
    "MethodNotAllowed": _r(F, "not a POST: a sender bug"),
    "ExpiredToken": _r(X, "the token expired"),
    "Unregistered": _r(X, "the app was removed or notifications turned off (410 timestamp)"),
    "PayloadTooLarge": _r(F, "payload over the limit (Herald checks it first; should not happen)"),
    "TooManyProviderTokenUpdates": _r(
        R, "a token changed too soon on one connection: connection retired, resent"
    ),
    "TooManyRequests": _r(R, "too many pushes to one device: back off", default_retry_after=60.0),
    "InternalServerError": _r(R, "APNs internal error: back off"),
    "ServiceUnavailable": _r(R, "APNs unavailable: back off"),
    "Shutdown": _r(R, "the APNs server is shutting down: resend on another connection"),
}
APNS_BY_STATUS: dict[int, Rule] = {
    200: _r(D, "accepted"),
    400: _r(F, "an unknown 400 reason: treated as a payload error"),
    403: _r(Q, "an unknown 403 reason: treated as a credential problem", credential_wide=True),
    404: _r(F, "an unknown 404 reason"),
    405: _r(F, "an unknown 405 reason"),
    410: _r(X, "an unknown 410 reason: the token is gone"),
    413: _r(F, "payload too large"),
    429: _r(R, "throttled", default_retry_after=60.0),
}

FCM: dict[str, Rule] = {
    "INVALID_ARGUMENT": _r(
        F, "the request is invalid; never delete (unless the violation names message.token)"
    ),
    "UNREGISTERED": _r(X, "the app instance is gone"),
    "SENDER_ID_MISMATCH": _r(
        Q, "the token belongs to another Firebase project: misconfiguration, never delete"
    ),
    "QUOTA_EXCEEDED": _r(
        R, "quota exhausted: honour Retry-After (60 s if absent)", default_retry_after=60.0
    ),
    "UNAVAILABLE": _r(R, "FCM overloaded: back off"),
    "INTERNAL": _r(
        R, "FCM internal error: back off, never sooner than 10 s", min_retry_seconds=10.0
    ),
    "THIRD_PARTY_AUTH_ERROR": _r(
        Q, "the APNs or Web Push credentials in Firebase are invalid", credential_wide=True
    ),
    "UNAUTHENTICATED": _r(R, "the access token expired: refreshed and resent"),
    "PERMISSION_DENIED": _r(
        Q, "the service account may not send for this project", credential_wide=True
    ),
    "NOT_FOUND": _r(
        Q, "no such project: the credential names the wrong project", credential_wide=True
    ),
    "AUTH_REFUSED": _r(Q, "the token endpoint refused the service account", credential_wide=True),
    "AUTH_UNAVAILABLE": _r(R, "the token endpoint did not answer: back off"),
}
FCM_BY_STATUS: dict[int, Rule] = {
    200: _r(D, "accepted"),
    400: _r(F, "a bare 400 (e.g. message too big): a payload error"),
    401: _r(R, "unauthenticated: token refreshed and resent"),
    403: _r(Q, "forbidden: a credential problem", credential_wide=True),
    404: _r(F, "a 404 without an FCM error (a proxy page, a wrong origin): not the token's fault"),
    429: _r(R, "throttled", default_retry_after=60.0),
}

WEB_PUSH: dict[int, Rule] = {
    200: _r(D, "accepted"),
    201: _r(D, "accepted (Location names the message)"),
    202: _r(D, "accepted"),
    400: _r(F, "bad TTL, Urgency or Topic: a sender bug"),
    401: _r(Q, "VAPID missing or invalid", credential_wide=True),
    403: _r(
        Q, "VAPID key does not match the subscription's applicationServerKey", credential_wide=True
    ),
    404: _r(X, "the subscription expired"),
    410: _r(X, "the subscription is gone (unsubscribed)"),
    413: _r(F, "payload too large (Herald checks it first; should not happen)"),
    429: _r(R, "throttled: honour Retry-After", default_retry_after=60.0),
}

TRANSPORT: dict[str, Rule] = {
    "TIMEOUT": _r(R, "no answer in time; the push may or may not have been delivered"),
    "GOAWAY": _r(R, "the connection closed before the request was processed"),
    "RST_STREAM": _r(R, "the server reset the stream"),
    "CONNECTION_LOST": _r(R, "the connection dropped before an answer"),
    "CONNECT_FAILED": _r(R, "no connection could be opened"),
}
SERVER_ERROR = _r(R, "a 5xx: back off")
CLIENT_ERROR = _r(F, "an unknown 4xx: not retried")


def decide(
    provider: str,
    status: int,
    reason: str,
    violations: tuple[str, ...] = (),
    *,
    environment_matches: bool = True,
) -> Rule:
    """The rule for one provider answer (status 0 = transport reason)."""
    if status == 0:
        if provider == "fcm" and reason in FCM:
            return FCM[reason]
        return TRANSPORT.get(reason, TRANSPORT["CONNECTION_LOST"])
    if provider == "apns":
        rule = APNS.get(reason) if status != 200 else None
        if rule is None:
            rule = APNS_BY_STATUS.get(status)
        if rule is not None and reason == "BadDeviceToken" and not environment_matches:
            # A development token sent to production (or the reverse): the token may be
            # fine where it belongs. Never delete on this evidence.
            return _r(F, "BadDeviceToken for a token of the other environment: not deleted")
    elif provider == "fcm":
        rule = FCM.get(reason) if status != 200 else None
        if (
            rule is not None
            and reason == "INVALID_ARGUMENT"
            and any(v in ("message.token", "token") for v in violations)
        ):
            # Herald validated the payload, and FCM names the token: it is malformed or stale.
            return _r(X, "INVALID_ARGUMENT naming message.token: the token is invalid")
        if rule is None:
            rule = FCM_BY_STATUS.get(status)
    else:
        rule = WEB_PUSH.get(status)
    if rule is not None:
        return rule
    if status >= 500:
        return SERVER_ERROR
    return CLIENT_ERROR


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 3600.0) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2^(attempt-1)))."""
    return random.uniform(0.0, min(cap, base * 2 ** max(0, attempt - 1)))


def retry_delay(rule: Rule, attempt: int, retry_after: float | None) -> float:
    """When to try again: the provider's Retry-After if given (else the rule's default),
    never below the rule's floor, otherwise jittered exponential backoff."""
    if retry_after is None:
        retry_after = rule.default_retry_after
    delay = retry_after if retry_after is not None else backoff_seconds(attempt)
    return max(delay, rule.min_retry_seconds)


def all_rows() -> list[tuple[str, str, str, Rule]]:
    """(provider, status, reason, rule) for every row: docs and tests read this."""
    rows: list[tuple[str, str, str, Rule]] = []
    from_status = {"apns": APNS_BY_STATUS, "fcm": FCM_BY_STATUS}
    for reason, rule in APNS.items():
        rows.append(("apns", "", reason, rule))
    for reason, rule in FCM.items():
        rows.append(("fcm", "", reason, rule))
    for provider, table in from_status.items():
        for status, rule in table.items():
            rows.append((provider, str(status), "(any other reason)", rule))
    for status, rule in WEB_PUSH.items():
        rows.append(("webpush", str(status), str(status), rule))
    for reason, rule in TRANSPORT.items():
        rows.append(("any", "0", reason, rule))
    return rows
