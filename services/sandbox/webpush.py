"""Web Push sandbox: a push service (RFC 8030) with VAPID (RFC 8292) and message
encryption (RFC 8291).

`create_subscription()` does what a browser does on `pushManager.subscribe()`: it makes a
P-256 key pair and an auth secret, keeps the private half, and returns the subscription
(endpoint, p256dh, auth) the page hands to the application server. A POST to the endpoint
is checked (TTL, Urgency, Topic, VAPID, size), decrypted with the subscription's private
key and logged with its plaintext; the answer is 201 with a Location.

A push service cannot read payloads, so an undecryptable body is still answered 201 (as a
real one would); the sandbox logs it with reason "UndecryptablePayload" so tests see it.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .faults import FaultBook, FaultRule
from .h2server import Connection, Disruption, Outcome, Request, Response
from .limits import KeyedLimit, refuse_negative
from .pki import b64url, b64url_decode
from .records import Ledger

SubscriptionState = Literal["active", "expired", "unsubscribed"]
PUSH_PREFIX = "/push/"
MAX_BODY = 4096
MAX_VAPID_LIFETIME = 24 * 3600
CLOCK_SKEW = 60
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
TOPIC_RE = re.compile(r"[A-Za-z0-9_\-]{1,32}")
ERRNO = {400: 101, 401: 109, 403: 109, 404: 102, 405: 101, 410: 106, 413: 104, 429: 201}
ERROR_NAMES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    410: "Gone",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    p256dh: str
    auth: bytes
    application_server_key: str | None
    state: SubscriptionState = "active"


class _Refused(Exception):
    def __init__(
        self, status: int, reason: str, message: str, retry_after: int | None = None
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


class WebPushSandbox:
    service = "webpush"

    def __init__(self, faults: FaultBook) -> None:
        self.faults = faults
        self.ledger = Ledger("webpush")
        self.origin = ""  # https://host:port, set when the listener is bound
        self._subscriptions: dict[str, Subscription] = {}
        self._verified: dict[tuple[str, str], dict[str, Any]] = {}
        # Push services throttle per subscription and per application server (VAPID key)
        # without publishing figures; both are off unless set.
        self.subscription_limit = KeyedLimit()
        self.vapid_key_limit = KeyedLimit()

    # -- configuration (what a browser does) ------------------------------------------
    def create_subscription(self, application_server_key: str | None = None) -> dict[str, Any]:
        """Subscribe as a browser would; returns PushSubscription.toJSON() plus `id`.
        With `application_server_key` (the VAPID public key, base64url), pushes signed
        by another key are refused with 403, as browsers' push services do."""
        if application_server_key is not None:
            _public_key_from_b64(application_server_key)  # reject a malformed key now
        private_key = ec.generate_private_key(ec.SECP256R1())
        p256dh = b64url(
            private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )
        subscription = Subscription(
            id=secrets.token_urlsafe(24),
            private_key=private_key,
            p256dh=p256dh,
            auth=secrets.token_bytes(16),
            application_server_key=application_server_key,
        )
        self._subscriptions[subscription.id] = subscription
        return self.describe(subscription)

    def describe(self, subscription: Subscription) -> dict[str, Any]:
        return {
            "id": subscription.id,
            "endpoint": f"{self.origin}{PUSH_PREFIX}{subscription.id}",
            "expirationTime": None,
            "keys": {"p256dh": subscription.p256dh, "auth": b64url(subscription.auth)},
            "state": subscription.state,
        }

    def set_state(self, subscription_id: str, state: SubscriptionState) -> None:
        """`expired` answers 404, `unsubscribed` 410, `active` accepts again."""
        if state not in ("active", "expired", "unsubscribed"):
            raise ValueError("subscription state is active, expired or unsubscribed")
        subscription = self._subscriptions.get(_id_of(subscription_id))
        if subscription is None:
            raise KeyError(subscription_id)
        subscription.state = state

    def set_limits(
        self,
        subscription_per_minute: int | None = None,
        vapid_key_per_minute: int | None = None,
    ) -> dict[str, int | None]:
        """Rate limits: pushes beyond them to one subscription, or signed by one VAPID key,
        answer 429 with Retry-After. None leaves a value as it is, 0 turns it off. Returns
        the limits in force."""
        per_sub = (
            self.subscription_limit.per_minute
            if subscription_per_minute is None
            else subscription_per_minute
        )
        per_key = (
            self.vapid_key_limit.per_minute
            if vapid_key_per_minute is None
            else vapid_key_per_minute
        )
        refuse_negative("a limit is a number of requests, 0 for none", per_sub, per_key)
        self.subscription_limit = KeyedLimit(per_sub)
        self.vapid_key_limit = KeyedLimit(per_key)
        return self.limits()

    def limits(self) -> dict[str, int | None]:
        return {
            "subscription_per_minute": self.subscription_limit.per_minute,
            "vapid_key_per_minute": self.vapid_key_limit.per_minute,
        }

    def reset(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.state = "active"
        self.subscription_limit = KeyedLimit()
        self.vapid_key_limit = KeyedLimit()
        self.ledger.reset()

    # -- request handling -------------------------------------------------------------
    def handle(self, request: Request, conn: Connection) -> Outcome:
        path = request.path.split("?", 1)[0]
        subscription_id = path[len(PUSH_PREFIX) :] if path.startswith(PUSH_PREFIX) else ""
        rule = self.faults.match("webpush", subscription_id or None)
        if rule is not None:
            injected = self._injected(rule, subscription_id)
            if injected is not None:
                return injected
        fields: dict[str, Any] = {"token": subscription_id or None}
        try:
            response = self._accept(request, subscription_id, fields)
        except _Refused as refused:
            self.ledger.record(refused.status, refused.reason, **fields)
            response = _error(refused.status, refused.message)
            if refused.retry_after is not None:
                response.headers.append(("retry-after", str(refused.retry_after)))
        if rule is not None and rule.delay:
            response.delay = rule.delay
        return response

    def _accept(self, request: Request, subscription_id: str, fields: dict[str, Any]) -> Response:
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            raise _Refused(404, "NotFound", "No such subscription")
        if request.method != "POST":
            raise _Refused(405, "MethodNotAllowed", "Use POST")
        if subscription.state == "expired":
            raise _Refused(404, "Expired", "Subscription expired")
        if subscription.state == "unsubscribed":
            raise _Refused(410, "Unsubscribed", "Request did not validate No such subscription")
        headers = request.headers
        vapid = self._verify_vapid(headers)
        fields["vapid_public_key"] = vapid["k"]
        fields["vapid_subject"] = vapid["claims"].get("sub")
        if (
            subscription.application_server_key is not None
            and vapid["k"] != subscription.application_server_key
        ):
            raise _Refused(403, "VapidKeyMismatch", "VAPID public key mismatch")
        self._throttle(subscription.id, vapid["k"])
        ttl = headers.get("ttl")
        if ttl is None or not ttl.strip().isdigit():
            raise _Refused(400, "MissingTTL", "Missing or invalid TTL header")
        urgency = headers.get("urgency", "normal").lower()
        if urgency not in URGENCIES:
            raise _Refused(400, "BadUrgency", "Urgency must be very-low, low, normal or high")
        topic = headers.get("topic")
        if topic is not None and not TOPIC_RE.fullmatch(topic):
            raise _Refused(400, "BadTopic", "Topic must be at most 32 URL-safe base64 characters")
        fields.update(ttl=int(ttl), urgency=urgency, topic=topic)
        body = request.body
        if len(body) > MAX_BODY:
            raise _Refused(413, "PayloadTooLarge", f"Payload of {len(body)} bytes is too large")
        encoding = headers.get("content-encoding", "").lower()
        fields["content_encoding"] = encoding or None
        reason: str | None = None
        if body:
            if encoding not in ("aes128gcm", "aesgcm"):
                raise _Refused(400, "BadEncoding", "Content-Encoding must be aes128gcm")
            try:
                plaintext = self._decrypt(subscription, body, encoding, headers)
            except (http_ece.ECEException, ValueError, TypeError) as exc:
                reason = "UndecryptablePayload"
                fields["decrypt_error"] = str(exc)
            else:
                fields["plaintext"] = plaintext.decode("utf-8", "replace")
                fields["payload"] = _json_or_none(plaintext)
        message_id = secrets.token_urlsafe(16)
        location = f"{self.origin}/m/{message_id}"
        self.ledger.record(201, reason, message_id=message_id, location=location, **fields)
        return Response(201, [("location", location), ("ttl", ttl.strip())])

    def _throttle(self, subscription_id: str, vapid_key: str) -> None:
        """429 when the subscription's or the VAPID key's bucket is empty. Checked after
        VAPID (the key is known only then); a refused push takes from neither bucket."""
        if self.subscription_limit.enabled:
            wait = self.subscription_limit.take(subscription_id)
            if wait:
                raise _Refused(429, "TooManyRequests", "Too many pushes to this subscription", wait)
        if self.vapid_key_limit.enabled:
            wait = self.vapid_key_limit.take(vapid_key)
            if wait:
                self.subscription_limit.give_back(subscription_id)
                raise _Refused(429, "TooManyRequests", "Too many pushes from this VAPID key", wait)

    def _verify_vapid(self, headers: dict[str, str]) -> dict[str, Any]:
        authorization = headers.get("authorization")
        if not authorization:
            raise _Refused(401, "MissingVapid", "Missing Authorization header")
        token, key = _parse_vapid(authorization, headers.get("crypto-key", ""))
        if not token or not key:
            raise _Refused(401, "BadVapid", "Malformed VAPID Authorization header")
        cached = self._verified.get((token, key))
        now = time.time()
        if cached is not None and cached["exp"] > now:
            return {"k": key, "claims": cached}
        try:
            public_key = _public_key_from_b64(key)
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["exp", "aud"]},
                leeway=CLOCK_SKEW,
            )
        except (jwt.PyJWTError, ValueError) as exc:
            raise _Refused(401, "BadVapid", f"Invalid VAPID token: {exc}") from None
        if claims["exp"] > now + MAX_VAPID_LIFETIME + CLOCK_SKEW:
            raise _Refused(401, "BadVapid", "VAPID exp is more than 24 hours ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Refused(401, "BadVapid", "VAPID sub must be a mailto: or https: URL")
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[(token, key)] = claims
        return {"k": key, "claims": claims}

    def _decrypt(
        self, subscription: Subscription, body: bytes, encoding: str, headers: dict[str, str]
    ) -> bytes:
        if encoding == "aes128gcm":
            if len(body) < 21 or body[20] != 65:
                raise ValueError("aes128gcm header must carry the sender's 65-byte key")
            plaintext: bytes = http_ece.decrypt(
                body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth,
                version="aes128gcm",
            )
            return plaintext
        # Legacy aesgcm (draft-04): salt and sender key travel in headers.
        salt = _header_param(headers.get("encryption", ""), "salt")
        dh = _header_param(headers.get("crypto-key", ""), "dh")
        if not salt or not dh:
            raise ValueError("aesgcm needs Encryption: salt= and Crypto-Key: dh=")
        legacy: bytes = http_ece.decrypt(
            body,
            salt=b64url_decode(salt),
            private_key=subscription.private_key,
            dh=b64url_decode(dh),
            auth_secret=subscription.auth,
            version="aesgcm",
        )
        return legacy

    def _injected(self, rule: FaultRule, subscription_id: str) -> Outcome | None:
        self.ledger.count(f"injected {rule.action}")
        if rule.action == "pass":
            return None
        if rule.action == "status":
            status = rule.status or 500
            reason = rule.reason or ERROR_NAMES.get(status, "Error")
            self.ledger.record(status, reason, token=subscription_id or None, injected=rule.id)
            response = _error(status, reason)
            if rule.retry_after is not None:
                response.headers.append(("retry-after", str(rule.retry_after)))
            response.delay = rule.delay
            return response
        return Disruption(
            kind=rule.action,
            last_stream_id=rule.last_stream_id,
            error_code=rule.error_code,
            delay=rule.delay,
        )


def _id_of(subscription: str) -> str:
    """A subscription id from an id or a full endpoint URL."""
    return subscription.rsplit(PUSH_PREFIX, 1)[-1] if PUSH_PREFIX in subscription else subscription


def _parse_vapid(authorization: str, crypto_key: str) -> tuple[str, str]:
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() == "vapid":
        params = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        return params.get("t", ""), params.get("k", "")
    if scheme.lower() == "webpush":
        # draft VAPID (py_vapid's Vapid01): the key travels in Crypto-Key: p256ecdsa=...
        return rest.strip(), _header_param(crypto_key, "p256ecdsa")
    return "", ""


def _header_param(header: str, name: str) -> str:
    for part in re.split(r"[;,]", header):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return ""


def _public_key_from_b64(key: str) -> ec.EllipticCurvePublicKey:
    try:
        raw = b64url_decode(key.strip())
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError(f"not a P-256 public key: {exc}") from exc


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _error(status: int, message: str) -> Response:
    body = {
        "code": status,
        "errno": ERRNO.get(status, 999),
        "error": ERROR_NAMES.get(status, "Error"),
        "message": message,
    }
    return Response(status, [("content-type", "application/json")], json.dumps(body).encode())
