"""FCM sandbox: the OAuth2 token endpoint and the HTTP v1 send endpoint, on one server.

- `POST /token` (form): a service account's RS256 JWT assertion (jwt-bearer grant) is
  verified against the registered account's public key; an expiring access token is issued.
- `POST /v1/projects/{project}/messages:send` (HTTP/2 or HTTP/1.1): bearer access token,
  project, quota bucket, message validation, target state; `{"name": ...}` on success,
  google.rpc.Status bodies with FcmError details otherwise.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .faults import FaultBook, FaultRule
from .fcm_message import message_size, size_limit, target_of, validate_request
from .h2server import Connection, Disruption, Outcome, Request, Response
from .limits import KeyedLimit, QuotaBucket, refuse_negative
from .records import Ledger

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SEND_SCOPES = frozenset(
    {
        "https://www.googleapis.com/auth/firebase.messaging",
        "https://www.googleapis.com/auth/cloud-platform",
    }
)
DEFAULT_ACCESS_TOKEN_LIFETIME = 3599
DEFAULT_QUOTA_PER_MINUTE = 600_000
MAX_ASSERTION_LIFETIME = 3600
CLOCK_SKEW = 300
SEND_PREFIX = "/v1/projects/"
SEND_SUFFIX = "/messages:send"

TokenStateName = Literal[
    "active", "unregistered", "sender_id_mismatch", "third_party_auth_error", "invalid"
]
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
ERROR_CODE_STATUS = {
    "INVALID_ARGUMENT": 400,
    "THIRD_PARTY_AUTH_ERROR": 401,
    "SENDER_ID_MISMATCH": 403,
    "UNREGISTERED": 404,
    "QUOTA_EXCEEDED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
}
DEFAULT_ERROR_CODE = {status: code for code, status in ERROR_CODE_STATUS.items()}
ERROR_MESSAGES = {
    "INVALID_ARGUMENT": "Request contains an invalid argument.",
    "THIRD_PARTY_AUTH_ERROR": "Auth error from APNS or Web Push Service",
    "SENDER_ID_MISMATCH": "SenderId mismatch",
    "UNREGISTERED": "Requested entity was not found.",
    "QUOTA_EXCEEDED": "Quota exceeded for quota metric 'Send requests' and limit 'Send "
    "requests per minute' of service 'fcm.googleapis.com'.",
    "INTERNAL": "Internal error encountered.",
    "UNAVAILABLE": "The service is currently unavailable.",
}
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
JSON_HEADERS = [("content-type", "application/json; charset=UTF-8")]
_UNPARSABLE = object()  # a body that is not JSON at all


@dataclass(slots=True)
class ServiceAccount:
    client_email: str
    project_id: str
    private_key_id: str
    public_key: rsa.RSAPublicKey


@dataclass(slots=True)
class AccessToken:
    account: ServiceAccount
    scopes: frozenset[str]
    expires_at: float


@dataclass(slots=True)
class TargetState:
    state: TokenStateName
    project: str | None = None  # the project the token belongs to; None = any


class _Failure(Exception):
    def __init__(self, response: Response, reason: str) -> None:
        self.response = response
        self.reason = reason


class FcmSandbox:
    service = "fcm"

    def __init__(
        self,
        faults: FaultBook,
        access_token_lifetime: int = DEFAULT_ACCESS_TOKEN_LIFETIME,
        quota_per_minute: int = DEFAULT_QUOTA_PER_MINUTE,
    ) -> None:
        self.faults = faults
        self.ledger = Ledger("fcm")
        self.token_uri = ""
        self.access_token_lifetime = access_token_lifetime
        self.default_quota_per_minute = quota_per_minute
        self._accounts: dict[str, ServiceAccount] = {}  # by private_key_id and client_email
        self._access_tokens: dict[str, AccessToken] = {}
        self._targets: dict[str, TargetState] = {}
        self._quotas: dict[str, QuotaBucket] = {}
        # FCM's per-device limit (240/min and 5,000/h per Android device). Off by default:
        # Delivery's tests and the benchmarks send bursts to one token, which FCM would
        # throttle but which those tests are not about.
        self.device_limit = KeyedLimit()
        self._issued = 0

    # -- configuration ----------------------------------------------------------------
    def register_service_account(self, info: dict[str, Any]) -> ServiceAccount:
        """Trust a service account: the JSON from the console (its private key is used only
        to derive the public key), or the same fields with `public_key` (PEM) instead."""
        pem = (info.get("public_key") or info.get("private_key") or "").encode()
        if b"PRIVATE KEY" in pem:
            public: Any = serialization.load_pem_private_key(pem, password=None).public_key()
        else:
            public = serialization.load_pem_public_key(pem)
        if not isinstance(public, rsa.RSAPublicKey):
            raise ValueError("a service account key is an RSA key")
        account = ServiceAccount(
            client_email=str(info["client_email"]),
            project_id=str(info["project_id"]),
            private_key_id=str(info.get("private_key_id", "")),
            public_key=public,
        )
        if account.private_key_id:
            self._accounts[account.private_key_id] = account
        self._accounts[account.client_email] = account
        return account

    def set_token(
        self, token: str, state: TokenStateName = "active", project: str | None = None
    ) -> TargetState:
        """What FCM knows about a registration token (or topic). `project` makes sends
        from other projects answer SENDER_ID_MISMATCH."""
        if state not in (
            "active",
            "unregistered",
            "sender_id_mismatch",
            "third_party_auth_error",
            "invalid",
        ):
            raise ValueError(f"unknown FCM token state {state!r}")
        entry = TargetState(state, project)
        self._targets[token] = entry
        return entry

    def set_quota(self, project: str, per_minute: int) -> None:
        self._quotas[project] = QuotaBucket(per_minute)

    def set_limits(
        self, device_per_minute: int | None = None, device_per_hour: int | None = None
    ) -> dict[str, int | None]:
        """Per-device limits (FCM's are 240/min and 5,000/h): a registration token sent
        more answers 429 QUOTA_EXCEEDED with Retry-After. None leaves a value as it is,
        0 turns it off. Returns the limits in force."""
        minute = self.device_limit.per_minute if device_per_minute is None else device_per_minute
        hour = self.device_limit.per_hour if device_per_hour is None else device_per_hour
        refuse_negative("a limit is a number of requests, 0 for none", minute, hour)
        self.device_limit = KeyedLimit(minute, hour)
        return self.limits()

    def limits(self) -> dict[str, int | None]:
        return {
            "device_per_minute": self.device_limit.per_minute,
            "device_per_hour": self.device_limit.per_hour,
        }

    def expire_access_tokens(self) -> None:
        """Make every issued access token expired (to exercise 401 and refresh)."""
        for token in self._access_tokens.values():
            token.expires_at = 0.0

    def reset(self) -> None:
        self._targets.clear()
        self._quotas.clear()
        self.device_limit = KeyedLimit()
        self.ledger.reset()

    # -- request handling -------------------------------------------------------------
    def handle(self, request: Request, conn: Connection) -> Outcome:
        path = request.path.split("?", 1)[0]
        if path == "/token":
            return self._token_endpoint(request)
        if path.startswith(SEND_PREFIX) and path.endswith(SEND_SUFFIX):
            project = path[len(SEND_PREFIX) : -len(SEND_SUFFIX)]
            if project and "/" not in project and request.method == "POST":
                return self._send(request, conn, project)
        return _status_response(404, "NOT_FOUND", "Requested entity was not found.")

    # The OAuth2 token endpoint (what service_account.Credentials.refresh talks to).
    def _token_endpoint(self, request: Request) -> Response:
        if request.method != "POST":
            return _oauth_error(405, "invalid_request", "Method not allowed.")
        form = parse_qs(request.body.decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant_type != JWT_BEARER_GRANT:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        if not assertion:
            return _oauth_error(400, "invalid_request", "Missing required parameter: assertion")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: malformed assertion.")
        account = self._accounts.get(str(header.get("kid", ""))) or self._accounts.get(
            str(unverified.get("iss", ""))
        )
        if account is None:
            return _oauth_error(400, "invalid_grant", "Invalid grant: account not found")
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=[GOOGLE_TOKEN_AUDIENCE, self.token_uri],
                options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp"]},
            )
        except jwt.InvalidAudienceError:
            return _oauth_error(
                400,
                "invalid_grant",
                f"Invalid JWT: Failed audience check. The expected value was "
                f"{GOOGLE_TOKEN_AUDIENCE}",
            )
        except jwt.PyJWTError:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, int)
            or not isinstance(exp, int)
            or exp - iat > MAX_ASSERTION_LIFETIME
            or exp < now
            or iat > now + CLOCK_SKEW
        ):
            return _oauth_error(
                400,
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                "reasonable timeframe. Check your iat and exp values in the JWT claim.",
            )
        if claims.get("iss") != account.client_email:
            return _oauth_error(400, "invalid_grant", "Invalid JWT: issuer does not match.")
        scopes = frozenset(str(claims.get("scope", "")).split())
        if not scopes:
            return _oauth_error(
                400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."
            )
        access_token = "ya29.sandbox." + secrets.token_urlsafe(48)
        self._access_tokens[access_token] = AccessToken(
            account, scopes, now + self.access_token_lifetime
        )
        self._issued += 1
        if self._issued % 1024 == 0:
            self._forget_expired_access_tokens(now)
        self.ledger.count("access tokens issued")
        body = {
            "access_token": access_token,
            "expires_in": self.access_token_lifetime,
            "token_type": "Bearer",
        }
        return Response(200, list(JSON_HEADERS), json.dumps(body).encode())

    def _forget_expired_access_tokens(self, now: float) -> None:
        expired = [t for t, info in self._access_tokens.items() if info.expires_at < now]
        for token in expired:
            del self._access_tokens[token]

    # The v1 send endpoint.
    def _send(self, request: Request, conn: Connection, project: str) -> Outcome:
        try:
            body: Any = json.loads(request.body) if request.body else None
        except (ValueError, UnicodeDecodeError):
            body = _UNPARSABLE
        message = body.get("message") if isinstance(body, dict) else None
        target = target_of(message)
        rule = self.faults.match("fcm", target[1] if target else None)
        if rule is not None:
            injected = self._injected(rule, target, project)
            if injected is not None:
                return injected
        fields: dict[str, Any] = {
            "token": target[1] if target else None,
            "target_type": target[0] if target else None,
            "project": project,
            "http_version": request.http_version,
        }
        try:
            account = self._authenticate(request, project)
            fields["client_email"] = account.client_email
            response = self._accept(body, message, project, fields)
        except _Failure as failure:
            fields["message"] = message
            self.ledger.record(failure.response.status, failure.reason, **fields)
            response = failure.response
        if rule is not None and rule.delay:
            response.delay = rule.delay
        return response

    def _authenticate(self, request: Request, project: str) -> ServiceAccount:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        info = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if info is None or info.expires_at < time.time():
            raise _Failure(
                _status_response(401, "UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE),
                "UNAUTHENTICATED",
            )
        if not info.scopes & SEND_SCOPES:
            raise _Failure(
                _status_response(
                    403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."
                ),
                "PERMISSION_DENIED",
            )
        if info.account.project_id != project:
            raise _Failure(
                _status_response(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission 'cloudmessaging.messages.create' denied on resource "
                    f"'//cloudresourcemanager.googleapis.com/projects/{project}' (or it may "
                    f"not exist).",
                ),
                "PERMISSION_DENIED",
            )
        return info.account

    def _accept(self, body: Any, message: Any, project: str, fields: dict[str, Any]) -> Response:
        bucket = self._quotas.get(project)
        if bucket is None:
            bucket = self._quotas[project] = QuotaBucket(self.default_quota_per_minute)
        wait = bucket.take()
        if wait:
            raise _Failure(_quota_exceeded(project, max(1, round(wait))), "QUOTA_EXCEEDED")
        if body is _UNPARSABLE or not isinstance(body, dict):
            raise _Failure(
                _invalid_argument(
                    "Invalid JSON payload received.",
                    [("", "Invalid JSON payload received. Expected a JSON object.")],
                ),
                "INVALID_ARGUMENT",
            )
        violations = validate_request(body)
        if violations:
            raise _Failure(_invalid_argument(violations[0][1], violations), "INVALID_ARGUMENT")
        assert isinstance(message, dict)
        size = message_size(message)
        if size > size_limit(message):
            # FCM answers a too-big message with a bare INVALID_ARGUMENT (no details).
            raise _Failure(
                _status_response(
                    400, "INVALID_ARGUMENT", f"Message is too big: {size} bytes.", details=[]
                ),
                "INVALID_ARGUMENT",
            )
        target = target_of(message)
        state = self._targets.get(target[1]) if target else None
        if state is not None:
            self._check_target(state, project)
        validate_only = bool(body.get("validate_only", body.get("validateOnly", False)))
        if target is not None and target[0] == "token" and not validate_only:
            wait = self.device_limit.take(target[1])
            if wait:
                raise _Failure(
                    _quota_exceeded(
                        project,
                        wait,
                        subject="device",
                        description="Device message rate exceeded",
                    ),
                    "QUOTA_EXCEEDED",
                )
        if validate_only:
            name = f"projects/{project}/messages/fake_message_id"
        else:
            name = f"projects/{project}/messages/0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        self.ledger.record(
            200, None, name=name, validate_only=validate_only, message=message, **fields
        )
        return Response(200, list(JSON_HEADERS), json.dumps({"name": name}).encode())

    def _check_target(self, state: TargetState, project: str) -> None:
        code: str | None = None
        if state.state == "unregistered":
            code = "UNREGISTERED"
        elif state.state == "sender_id_mismatch" or (
            state.project is not None and state.project != project
        ):
            code = "SENDER_ID_MISMATCH"
        elif state.state == "third_party_auth_error":
            code = "THIRD_PARTY_AUTH_ERROR"
        elif state.state == "invalid":
            raise _Failure(
                _invalid_argument(
                    "The registration token is not a valid FCM registration token",
                    [("message.token", "Invalid registration token")],
                ),
                "INVALID_ARGUMENT",
            )
        if code is not None:
            raise _Failure(_fcm_error(code), code)

    def _injected(
        self, rule: FaultRule, target: tuple[str, str] | None, project: str
    ) -> Outcome | None:
        self.ledger.count(f"injected {rule.action}")
        if rule.action == "pass":
            return None
        if rule.action == "status":
            status = rule.status or 500
            code = rule.reason or DEFAULT_ERROR_CODE.get(status, RPC_STATUS.get(status, "INTERNAL"))
            if code == "QUOTA_EXCEEDED":
                response = _quota_exceeded(project, rule.retry_after)
            elif code in ERROR_CODE_STATUS:
                response = _fcm_error(code, status)
            else:
                response = _status_response(status, RPC_STATUS.get(status, code), code)
            if rule.retry_after is not None and code != "QUOTA_EXCEEDED":
                response.headers.append(("retry-after", str(rule.retry_after)))
            response.delay = rule.delay
            self.ledger.record(
                status,
                code,
                token=target[1] if target else None,
                project=project,
                injected=rule.id,
            )
            return response
        return Disruption(
            kind=rule.action,
            last_stream_id=rule.last_stream_id,
            error_code=rule.error_code,
            debug_data=(rule.reason or "").encode(),
            delay=rule.delay,
        )


def _status_response(
    status: int, rpc_status: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    return Response(status, list(JSON_HEADERS), json.dumps({"error": error}).encode())


def _fcm_error(code: str, status: int | None = None) -> Response:
    status = status or ERROR_CODE_STATUS[code]
    return _status_response(
        status,
        RPC_STATUS.get(status, "UNKNOWN"),
        ERROR_MESSAGES.get(code, code),
        [{"@type": FCM_ERROR_TYPE, "errorCode": code}],
    )


def _invalid_argument(message: str, violations: list[tuple[str, str]]) -> Response:
    return _status_response(
        400,
        "INVALID_ARGUMENT",
        message,
        [
            {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [
                    {"field": field, "description": description}
                    for field, description in violations
                ],
            },
        ],
    )


def _quota_exceeded(
    project: str,
    retry_after: int | None,
    subject: str | None = None,
    description: str = "Send requests per minute exceeded",
) -> Response:
    response = _status_response(
        429,
        "RESOURCE_EXHAUSTED",
        ERROR_MESSAGES["QUOTA_EXCEEDED"],
        [
            {"@type": FCM_ERROR_TYPE, "errorCode": "QUOTA_EXCEEDED"},
            {
                "@type": QUOTA_FAILURE_TYPE,
                "violations": [
                    {
                        # The device's token is not echoed: bodies end up in senders' logs.
                        "subject": subject or f"project:{project}",
                        "description": description,
                    }
                ],
            },
        ],
    )
    if retry_after is not None:
        response.headers.append(("retry-after", str(retry_after)))
    return response


def _oauth_error(status: int, error: str, description: str) -> Response:
    body = {"error": error, "error_description": description}
    return Response(status, list(JSON_HEADERS), json.dumps(body).encode())
