"""APNs sandbox: the HTTP/2 provider API with token (JWT) authentication.

What it checks, in order (see docs/sandboxes.md and PROVIDERS.md §1): method, path, the
device token's form, apns-id, the provider token (ES256 signature against a registered key,
team, environment, age, refresh rate per connection, team bound to the connection),
duplicate headers, topic and push type, priority, expiration, collapse id, payload size,
then the device token's state. Success is HEADERS only; an error is HEADERS plus one JSON
DATA frame. The connection preface advertises one concurrent stream, raised after the first
successful request, as APNs does.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .faults import FaultBook, FaultRule
from .h2server import Connection, Disruption, Outcome, Request, Response
from .limits import KeyedLimit, refuse_negative
from .records import Ledger, redact

log = logging.getLogger(__name__)

Environment = Literal["development", "production"]
KeyEnvironment = Literal["development", "production", "both"]
TokenStateName = Literal["active", "unregistered", "expired"]

DEVICE_PATH = "/3/device/"
TOKEN_RE = re.compile(r"[0-9a-fA-F]{64,200}")
APNS_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Topic suffix each push type requires (PROVIDERS.md §1); others use the bare bundle id.
TOPIC_SUFFIX = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
    "widgets": ".push-type.widgets",
    "controls": ".push-type.controls",
}
PUSH_TYPES = frozenset({"alert", "background", "mdm", *TOPIC_SUFFIX})
PRIORITIES = frozenset({"10", "5", "1"})
MAX_PAYLOAD = 4096
MAX_VOIP_PAYLOAD = 5120
MAX_COLLAPSE_ID = 64
JWT_MAX_AGE = 3600  # iat older than this: ExpiredProviderToken
JWT_MIN_REFRESH = 20 * 60  # a new JWT sooner than this on a connection: 429
JWT_CLOCK_SKEW = 300  # an iat this far in the future is still accepted
# After TooManyProviderTokenUpdates "the connection stays unusable for a while"
# (PROVIDERS.md §1; Apple gives no figure): every request on it answers the same 429 for
# this long, whatever token it carries. A client must open a new connection or wait.
TOKEN_UPDATE_PENALTY = 60.0
RAISED_MAX_CONCURRENT_STREAMS = 1000
REASON_STATUS = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyIdInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}
DEFAULT_REASON = {
    400: "BadDeviceToken",
    403: "Forbidden",
    404: "BadPath",
    405: "MethodNotAllowed",
    410: "Unregistered",
    413: "PayloadTooLarge",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass(slots=True)
class SigningKey:
    key_id: str
    team_id: str
    public_key: ec.EllipticCurvePublicKey
    environment: KeyEnvironment
    topics: frozenset[str]  # bundle ids the team may push to; empty = any


@dataclass(slots=True)
class TokenState:
    state: TokenStateName = "active"
    topic: str | None = None  # bundle id the token belongs to; None = any
    environment: Environment | None = None  # None = either
    unregistered_at_ms: int = 0


@dataclass(slots=True)
class _ConnState:
    """Per connection: the provider token in use (verified once), its team, refresh time."""

    jwt: str | None = None
    jwt_iat: int = 0
    jwt_adopted_at: float = 0.0
    key_id: str = ""
    team_id: str | None = None
    streams_raised: bool = False
    certificate: tuple[str, str] | None = None  # (bundle id, environment) from the TLS cert
    blocked_until: float = 0.0  # set by TooManyProviderTokenUpdates (time.monotonic())


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


class ApnsSandbox:
    """The APNs provider API. Register keys and token states, then point a client at it."""

    service = "apns"

    def __init__(self, faults: FaultBook, environment: Environment = "development") -> None:
        self.faults = faults
        self.environment: Environment = environment
        self.ledger = Ledger("apns")
        self._keys: dict[str, SigningKey] = {}
        self._tokens: dict[str, TokenState] = {}
        self.jwt_min_refresh = JWT_MIN_REFRESH
        self.jwt_max_age = JWT_MAX_AGE
        self.token_update_penalty = TOKEN_UPDATE_PENALTY
        # APNs' per-device limit (TooManyRequests) has no published figure; off unless set.
        self.device_limit = KeyedLimit()

    # -- configuration ----------------------------------------------------------------
    def register_key(
        self,
        key_id: str,
        team_id: str,
        key_pem: bytes | str,
        environment: KeyEnvironment = "both",
        topics: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Accept provider tokens signed by this key. `key_pem` is the .p8 private key or
        its public key (PEM); `topics` limits the bundle ids the team may push to."""
        data = key_pem.encode() if isinstance(key_pem, str) else key_pem
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public: Any = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise ValueError("an APNs key is a P-256 (ES256) key")
        if len(key_id) != 10 or len(team_id) != 10:
            raise ValueError("APNs key ids and team ids are 10 characters")
        if environment not in ("development", "production", "both"):
            raise ValueError("environment is development, production or both")
        self._keys[key_id] = SigningKey(key_id, team_id, public, environment, frozenset(topics))

    def set_token(
        self,
        token: str,
        state: TokenStateName = "active",
        topic: str | None = None,
        environment: Environment | None = None,
        unregistered_at_ms: int | None = None,
    ) -> TokenState:
        """Set what APNs knows about a device token. `unregistered` answers 410 with the
        given (default: now) millisecond timestamp; `expired` answers 410 ExpiredToken;
        `topic` makes sends for other bundle ids answer DeviceTokenNotForTopic."""
        if state not in ("active", "unregistered", "expired"):
            raise ValueError("token state is active, unregistered or expired")
        if unregistered_at_ms is None:
            unregistered_at_ms = int(time.time() * 1000)
        entry = TokenState(state, topic, environment, unregistered_at_ms)
        self._tokens[token.lower()] = entry
        return entry

    def set_limits(
        self,
        device_per_minute: int | None = None,
        device_per_hour: int | None = None,
        token_update_penalty: float | None = None,
    ) -> dict[str, float | None]:
        """Per-device limits (pushes to one device token beyond them answer 429
        TooManyRequests) and how long a connection stays unusable after
        TooManyProviderTokenUpdates. None leaves a value as it is; 0 turns a limit off.
        Returns the settings in force."""
        minute = self.device_limit.per_minute if device_per_minute is None else device_per_minute
        hour = self.device_limit.per_hour if device_per_hour is None else device_per_hour
        refuse_negative(
            "limits and the penalty are not negative", minute, hour, token_update_penalty
        )
        self.device_limit = KeyedLimit(minute, hour)
        if token_update_penalty is not None:
            self.token_update_penalty = float(token_update_penalty)
        return self.limits()

    def limits(self) -> dict[str, float | None]:
        return {
            "device_per_minute": self.device_limit.per_minute,
            "device_per_hour": self.device_limit.per_hour,
            "token_update_penalty": self.token_update_penalty,
        }

    def reset(self) -> None:
        self._tokens.clear()
        self.device_limit = KeyedLimit()
        self.token_update_penalty = TOKEN_UPDATE_PENALTY
        self.ledger.reset()

    # -- request handling -------------------------------------------------------------
    def handle(self, request: Request, conn: Connection) -> Outcome:
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4())
        token = ""
        if request.path.startswith(DEVICE_PATH):
            token = request.path[len(DEVICE_PATH) :].split("?", 1)[0]
        rule = self.faults.match("apns", token or None)
        if rule is not None:
            outcome = self._injected(rule, request, conn, token, apns_id)
            if outcome is not None:
                return outcome
        state: _ConnState = conn.app_state or _ConnState()
        conn.app_state = state
        try:
            response = self._process(request, conn, state, token, apns_id)
        except _Rejected as rejected:
            response = self._error(rejected.reason, apns_id, request, token, state)
        if rule is not None and rule.delay:
            response.delay = rule.delay
        return response

    def _process(
        self, request: Request, conn: Connection, state: _ConnState, token: str, apns_id: str
    ) -> Response:
        if request.method != "POST":
            raise _Rejected("MethodNotAllowed")
        if not request.path.startswith(DEVICE_PATH) and request.path.rstrip("/") != "/3/device":
            raise _Rejected("BadPath")
        if not token:
            raise _Rejected("MissingDeviceToken")
        if not TOKEN_RE.fullmatch(token) or len(token) % 2:
            raise _Rejected("BadDeviceToken")
        headers = request.headers
        if "apns-id" in headers and not APNS_ID_RE.fullmatch(apns_id):
            raise _Rejected("BadMessageId")
        if state.blocked_until and time.monotonic() < state.blocked_until:
            raise _Rejected("TooManyProviderTokenUpdates")
        authorization = headers.get("authorization")
        topic = headers.get("apns-topic")
        if authorization is None and conn.peer_certificate is not None:
            # Certificate-based authentication: the certificate names one bundle id, which
            # is also the default topic.
            cert_bundle = self._certificate_bundle(conn, state, request)
            team_id, key_id, allowed = None, None, frozenset({cert_bundle})
            topic = topic or cert_bundle
        else:
            cert_bundle = None
            signing_key = self._authenticate(authorization, state, request)
            team_id, key_id, allowed = (
                signing_key.team_id,
                signing_key.key_id,
                signing_key.topics,
            )
        if request.duplicate_headers:
            raise _Rejected("DuplicateHeaders")
        if not topic:
            raise _Rejected("MissingTopic")
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            raise _Rejected("InvalidPushType")
        bundle_id = _bundle_id_for(topic, push_type)
        if allowed and bundle_id not in allowed:
            raise _Rejected("TopicDisallowed")
        priority = headers.get("apns-priority")
        if priority is not None and priority not in PRIORITIES:
            raise _Rejected("BadPriority")
        # Background pushes must be sent at priority 5 (an absent header counts as 5 here
        # rather than APNs' general default of 10, which is what clients rely on).
        if push_type == "background" and priority == "10":
            raise _Rejected("BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            raise _Rejected("BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > MAX_COLLAPSE_ID:
            raise _Rejected("BadCollapseId")
        body = request.body
        if not body:
            raise _Rejected("PayloadEmpty")
        if len(body) > (MAX_VOIP_PAYLOAD if push_type == "voip" else MAX_PAYLOAD):
            raise _Rejected("PayloadTooLarge")
        environment = self._environment_of(request)
        token_state = self._tokens.get(token.lower())
        if token_state is not None:
            if token_state.environment is not None and token_state.environment != environment:
                raise _Rejected("BadDeviceToken")  # a sandbox token sent to production
            if token_state.topic is not None and token_state.topic != bundle_id:
                raise _Rejected("DeviceTokenNotForTopic")
            if token_state.state == "unregistered":
                raise _Rejected("Unregistered")
            if token_state.state == "expired":
                raise _Rejected("ExpiredToken")
        if self.device_limit.enabled and self.device_limit.take(token.lower()):
            raise _Rejected("TooManyRequests")
        if not state.streams_raised:
            # APNs lifts the one-stream limit once a request with a valid token succeeds.
            state.streams_raised = True
            conn.set_max_concurrent_streams(RAISED_MAX_CONCURRENT_STREAMS)
        self.ledger.record(
            200,
            None,
            token=token,
            apns_id=apns_id,
            topic=topic,
            push_type=push_type,
            priority=int(priority) if priority else None,
            expiration=int(expiration) if expiration is not None else None,
            collapse_id=collapse_id,
            payload=_decode_payload(body),
            team_id=team_id,
            key_id=key_id,
            certificate_bundle_id=cert_bundle,
            environment=environment,
            connection=conn.connection_id,
        )
        response_headers = [("apns-id", apns_id)]
        if environment == "development":
            response_headers.append(("apns-unique-id", str(uuid.uuid4())))
        return Response(200, response_headers)

    def _authenticate(
        self, authorization: str | None, state: _ConnState, request: Request
    ) -> SigningKey:
        if not authorization:
            raise _Rejected("MissingProviderToken")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Rejected("InvalidProviderToken")
        now = time.time()
        if token == state.jwt:
            key = self._keys.get(state.key_id)
            if key is None:  # key removed since: treat as a new, unknown token
                raise _Rejected("InvalidProviderToken")
            if now - state.jwt_iat > self.jwt_max_age:
                raise _Rejected("ExpiredProviderToken")
            self._check_environment(key, request)
            return key
        key, iat = self._verify(token, now)
        self._check_environment(key, request)
        if state.team_id is not None and key.team_id != state.team_id:
            raise _Rejected("UnrelatedKeyIdInToken")
        if now - iat > self.jwt_max_age:
            raise _Rejected("ExpiredProviderToken")
        if state.jwt is not None and now - state.jwt_adopted_at < self.jwt_min_refresh:
            if self.token_update_penalty:
                state.blocked_until = time.monotonic() + self.token_update_penalty
            raise _Rejected("TooManyProviderTokenUpdates")
        state.jwt = token
        state.jwt_iat = iat
        state.jwt_adopted_at = now
        state.key_id = key.key_id
        state.team_id = key.team_id
        return key

    def _certificate_bundle(self, conn: Connection, state: _ConnState, request: Request) -> str:
        if state.certificate is None:
            subject = dict(
                item for rdn in (conn.peer_certificate or {}).get("subject", ()) for item in rdn
            )
            bundle = subject.get("userId", "")
            if not bundle:
                raise _Rejected("BadCertificate")
            development_only = subject.get("commonName", "").startswith(
                "Apple Development IOS Push Services"
            )
            state.certificate = (bundle, "development" if development_only else "both")
        bundle, environment = state.certificate
        if environment != "both" and environment != self._environment_of(request):
            raise _Rejected("BadCertificateEnvironment")
        return bundle

    def _check_environment(self, key: SigningKey, request: Request) -> None:
        if key.environment != "both" and key.environment != self._environment_of(request):
            raise _Rejected("BadEnvironmentKeyIdInToken")

    def _verify(self, token: str, now: float) -> tuple[SigningKey, int]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Rejected("InvalidProviderToken") from None
        key = self._keys.get(str(header.get("kid", "")))
        if key is None or header.get("alg") != "ES256":
            raise _Rejected("InvalidProviderToken")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise _Rejected("InvalidProviderToken") from None
        iat = claims.get("iat")
        if claims.get("iss") != key.team_id or not isinstance(iat, int):
            raise _Rejected("InvalidProviderToken")
        if iat > now + JWT_CLOCK_SKEW:
            raise _Rejected("InvalidProviderToken")
        return key, iat

    def _environment_of(self, request: Request) -> Environment:
        host = request.authority.rsplit(":", 1)[0] if request.authority else ""
        if host == "api.push.apple.com":
            return "production"
        if host in ("api.sandbox.push.apple.com", "api.development.push.apple.com"):
            return "development"
        return self.environment

    def _error(
        self, reason: str, apns_id: str, request: Request, token: str, state: _ConnState
    ) -> Response:
        status = REASON_STATUS.get(reason, 400)
        body: dict[str, Any] = {"reason": reason}
        if status == 410:
            token_state = self._tokens.get(token.lower())
            body["timestamp"] = (
                token_state.unregistered_at_ms if token_state else int(time.time() * 1000)
            )
        self.ledger.record(
            status,
            reason,
            token=token,
            apns_id=apns_id,
            topic=request.headers.get("apns-topic"),
            push_type=request.headers.get("apns-push-type"),
            team_id=state.team_id,
            key_id=state.key_id or None,
            payload=_decode_payload(request.body),
        )
        if status >= 500 or reason in ("InvalidProviderToken", "TooManyProviderTokenUpdates"):
            log.debug("apns %s for token %s", reason, redact(token))
        return _error_response(status, reason, apns_id, body)

    def _injected(
        self, rule: FaultRule, request: Request, conn: Connection, token: str, apns_id: str
    ) -> Outcome | None:
        self.ledger.count(f"injected {rule.action}")
        if rule.action == "pass":
            return None
        if rule.action == "status":
            status = rule.status or 500
            reason = rule.reason or DEFAULT_REASON.get(status, "InternalServerError")
            body: dict[str, Any] = {"reason": reason}
            if status == 410:
                body["timestamp"] = int(time.time() * 1000)
            self.ledger.record(status, reason, token=token, apns_id=apns_id, injected=rule.id)
            response = _error_response(status, reason, apns_id, body)
            if rule.retry_after is not None:
                response.headers.append(("retry-after", str(rule.retry_after)))
            response.delay = rule.delay
            return response
        debug = json.dumps({"reason": rule.reason}).encode() if rule.reason else b""
        return Disruption(
            kind=rule.action,
            last_stream_id=rule.last_stream_id,
            error_code=rule.error_code,
            debug_data=debug,
            delay=rule.delay,
        )


def _bundle_id_for(topic: str, push_type: str) -> str:
    suffix = TOPIC_SUFFIX.get(push_type)
    if suffix is not None:
        if not topic.endswith(suffix) or len(topic) == len(suffix):
            raise _Rejected("BadTopic")
        return topic[: -len(suffix)]
    if any(topic.endswith(s) for s in TOPIC_SUFFIX.values()):
        raise _Rejected("BadTopic")  # e.g. an alert sent to the .voip topic
    return topic


def _decode_payload(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace")


def _error_response(status: int, reason: str, apns_id: str, body: dict[str, Any]) -> Response:
    return Response(
        status,
        [("apns-id", apns_id), ("content-type", "application/json")],
        json.dumps(body, separators=(",", ":")).encode(),
    )


def new_device_token() -> str:
    """A well-formed device token (32 random bytes, hex), as an iPhone would report."""
    return secrets.token_hex(32)
