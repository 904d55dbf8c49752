"""Provider credentials: validation on upload and the public view returned to callers.

`validate()` turns a `Credentials` message into a `NewCredential` (secret material plus
the facts that may be shown) or raises InvalidArgument listing every bad field. Secret
material never leaves this module except sealed (credential_store) or inside a sender.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from google.protobuf import timestamp_pb2

from herald.delivery.v1 import credentials_pb2
from herald.type.v1 import platform_pb2
from services.core.errors import InvalidArgument, Validator

CREDENTIALS_MALFORMED = "CREDENTIALS_MALFORMED"
APPLE_ID_RE = re.compile(r"[A-Z0-9]{10}")
BUNDLE_ID_RE = re.compile(r"[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)+")
APP_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
SERVICE_ACCOUNT_FIELDS = ("project_id", "private_key", "client_email", "token_uri")

PROVIDER_NAMES: dict[int, str] = {
    platform_pb2.PROVIDER_APNS: "apns",
    platform_pb2.PROVIDER_FCM: "fcm",
    platform_pb2.PROVIDER_WEB_PUSH: "webpush",
}
PROVIDER_ENUMS: dict[str, platform_pb2.Provider.ValueType] = {
    "apns": platform_pb2.PROVIDER_APNS,
    "fcm": platform_pb2.PROVIDER_FCM,
    "webpush": platform_pb2.PROVIDER_WEB_PUSH,
}
ENVIRONMENT_NAMES: dict[int, str] = {
    platform_pb2.APNS_ENVIRONMENT_PRODUCTION: "production",
    platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT: "development",
}
ENVIRONMENT_ENUMS: dict[str, platform_pb2.ApnsEnvironment.ValueType] = {
    "production": platform_pb2.APNS_ENVIRONMENT_PRODUCTION,
    "development": platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
}


@dataclass(frozen=True)
class Slot:
    """Where a credential lives: one per (app, provider, APNs environment)."""

    app_id: str
    provider: str  # "apns" | "fcm" | "webpush"
    environment: str = ""  # "production" | "development" for APNs, "" otherwise

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.environment}" if self.environment else self.provider


@dataclass(frozen=True)
class NewCredential:
    """A validated upload: `secret` is sealed at rest, `public` may be shown."""

    slot: Slot
    kind: str  # "apns_token" | "apns_certificate" | "fcm" | "web_push"
    secret: dict[str, str]
    public: dict[str, str]


@dataclass(frozen=True)
class Credential:
    """A stored credential as senders and the API see it (secret already opened)."""

    slot: Slot
    kind: str
    secret: dict[str, str] = field(repr=False)
    public: dict[str, str]
    version: int
    create_time: float
    update_time: float
    last_error: str = ""
    last_error_time: float = 0.0
    circuit_until: float = 0.0


def slot_of(app_id: str, provider: int, environment: int, check: Validator, prefix: str) -> Slot:
    check.require(
        bool(APP_ID_RE.fullmatch(app_id)),
        f"{prefix}app_id",
        "is required (1-128 of A-Z a-z 0-9 _ . -)",
    )
    name = PROVIDER_NAMES.get(provider)
    check.require(name is not None, f"{prefix}provider", "must be APNS, FCM or WEB_PUSH")
    env = ""
    if name == "apns":
        env = ENVIRONMENT_NAMES.get(environment, "")
        check.require(bool(env), f"{prefix}apns_environment", "is required for APNs")
    return Slot(app_id, name or "", env)


def validate(message: credentials_pb2.Credentials, prefix: str = "credentials.") -> NewCredential:
    """Check an upload completely; raise InvalidArgument naming every bad field."""
    check = Validator()
    check.require(
        bool(APP_ID_RE.fullmatch(message.app_id)),
        f"{prefix}app_id",
        "is required (1-128 of A-Z a-z 0-9 _ . -)",
    )
    which = message.WhichOneof("config")
    malformed: list[str] = []  # fields whose material does not parse
    result: tuple[Slot, str, dict[str, str], dict[str, str]] | None = None
    if which == "apns_token":
        result = _apns_token(message, check, malformed, f"{prefix}apns_token.")
    elif which == "apns_certificate":
        result = _apns_certificate(message, check, malformed, f"{prefix}apns_certificate.")
    elif which == "fcm":
        result = _fcm(message, check, malformed, f"{prefix}fcm.")
    elif which == "web_push":
        result = _web_push(message, check, malformed, f"{prefix}web_push.")
    else:
        check.add(
            f"{prefix}config",
            "exactly one of apns_token, apns_certificate, fcm, web_push is required",
        )
    if check.violations:
        reason = CREDENTIALS_MALFORMED if malformed else "INVALID_ARGUMENT"
        raise InvalidArgument("the credentials are invalid", check.violations, reason=reason)
    assert result is not None
    slot, kind, secret, public = result
    return NewCredential(slot, kind, secret, public)


def _bad(check: Validator, malformed: list[str], path: str, description: str) -> None:
    check.add(path, description, CREDENTIALS_MALFORMED)
    malformed.append(path)


def _environment(value: int, check: Validator, path: str) -> str:
    env = ENVIRONMENT_NAMES.get(value, "")
    check.require(bool(env), path, "must be PRODUCTION or DEVELOPMENT")
    return env


def _bundle(value: str, check: Validator, path: str) -> None:
    check.require(
        bool(BUNDLE_ID_RE.fullmatch(value)), path, "must be a bundle id such as com.example.app"
    )


def _apns_token(
    message: credentials_pb2.Credentials, check: Validator, malformed: list[str], p: str
) -> tuple[Slot, str, dict[str, str], dict[str, str]]:
    config = message.apns_token
    fingerprint = ""
    key = _load_private_key(config.private_key_pem.encode(), None)
    if key is None:
        _bad(check, malformed, f"{p}private_key_pem", "is not a PEM (PKCS#8) private key")
    elif not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"):
        _bad(
            check,
            malformed,
            f"{p}private_key_pem",
            "must be a P-256 (ES256) key, as Apple's .p8 files are",
        )
    else:
        fingerprint = _public_fingerprint(key.public_key())
    if not APPLE_ID_RE.fullmatch(config.key_id):
        _bad(check, malformed, f"{p}key_id", "must be the 10-character key id (A-Z, 0-9)")
    if not APPLE_ID_RE.fullmatch(config.team_id):
        _bad(check, malformed, f"{p}team_id", "must be the 10-character team id (A-Z, 0-9)")
    _bundle(config.bundle_id, check, f"{p}bundle_id")
    env = _environment(config.environment, check, f"{p}environment")
    secret = {"private_key_pem": config.private_key_pem}
    public = {
        "key_id": config.key_id,
        "team_id": config.team_id,
        "bundle_id": config.bundle_id,
        "fingerprint": fingerprint,
    }
    return Slot(message.app_id, "apns", env), "apns_token", secret, public


def _apns_certificate(
    message: credentials_pb2.Credentials, check: Validator, malformed: list[str], p: str
) -> tuple[Slot, str, dict[str, str], dict[str, str]]:
    config = message.apns_certificate
    cert: x509.Certificate | None = None
    key: Any = None
    form = config.WhichOneof("certificate")
    if form == "pem":
        try:
            cert = x509.load_pem_x509_certificate(config.pem.certificate_pem.encode())
        except ValueError:
            _bad(check, malformed, f"{p}pem.certificate_pem", "is not a PEM certificate")
        key = _load_private_key(config.pem.private_key_pem.encode(), None)
        if key is None:
            _bad(
                check, malformed, f"{p}pem.private_key_pem", "is not an unencrypted PEM private key"
            )
    elif form == "pkcs12":
        password = config.pkcs12.password.encode() or None
        try:
            key, cert, _ = pkcs12.load_key_and_certificates(config.pkcs12.data, password)
        except ValueError:
            _bad(
                check,
                malformed,
                f"{p}pkcs12.data",
                "does not open: not PKCS#12 or a wrong password",
            )
        else:
            if cert is None or key is None:
                _bad(
                    check,
                    malformed,
                    f"{p}pkcs12.data",
                    "must hold a certificate and its private key",
                )
    else:
        check.add(f"{p}certificate", "exactly one of pem, pkcs12 is required")
    if cert is not None and key is not None and not _same_public_key(cert, key):
        where = f"{p}pem.private_key_pem" if form == "pem" else f"{p}pkcs12.data"
        _bad(check, malformed, where, "does not match the certificate")
    _bundle(config.bundle_id, check, f"{p}bundle_id")
    env = _environment(config.environment, check, f"{p}environment")
    secret: dict[str, str] = {}
    public = {"bundle_id": config.bundle_id}
    if cert is not None and key is not None:
        secret = {
            "certificate_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "private_key_pem": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        }
        public["fingerprint"] = hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        public["subject"] = cert.subject.rfc4514_string()
        public["expire_time"] = str(int(cert.not_valid_after_utc.timestamp()))
    return Slot(message.app_id, "apns", env), "apns_certificate", secret, public


def _fcm(
    message: credentials_pb2.Credentials, check: Validator, malformed: list[str], p: str
) -> tuple[Slot, str, dict[str, str], dict[str, str]]:
    path = f"{p}service_account_json"
    public: dict[str, str] = {}
    try:
        info = json.loads(message.fcm.service_account_json)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        _bad(check, malformed, path, "is not a JSON object (the service-account key file)")
        return Slot(message.app_id, "fcm"), "fcm", {}, public
    if info.get("type", "service_account") != "service_account":
        _bad(check, malformed, f"{path}.type", "must be service_account")
    for name in SERVICE_ACCOUNT_FIELDS:
        if not isinstance(info.get(name), str) or not info[name]:
            _bad(check, malformed, f"{path}.{name}", f"the key file has no {name}")
    if isinstance(info.get("private_key"), str) and info["private_key"]:
        key = _load_private_key(info["private_key"].encode(), None)
        if not isinstance(key, rsa.RSAPrivateKey):
            _bad(check, malformed, f"{path}.private_key", "is not an RSA private key in PEM form")
        else:
            public["fingerprint"] = _public_fingerprint(key.public_key())
    token_uri = info.get("token_uri")
    if isinstance(token_uri, str) and token_uri and not token_uri.startswith("https://"):
        _bad(check, malformed, f"{path}.token_uri", "must be an https:// URL")
    public.update(
        project_id=str(info.get("project_id", "")),
        client_email=str(info.get("client_email", "")),
        private_key_id=str(info.get("private_key_id", "")),
    )
    secret = {"service_account_json": message.fcm.service_account_json}
    return Slot(message.app_id, "fcm"), "fcm", secret, public


def _web_push(
    message: credentials_pb2.Credentials, check: Validator, malformed: list[str], p: str
) -> tuple[Slot, str, dict[str, str], dict[str, str]]:
    config = message.web_push
    public: dict[str, str] = {"subject": config.subject}
    key = load_vapid_private_key(config.private_key)
    if key is None:
        _bad(
            check,
            malformed,
            f"{p}private_key",
            "must be a P-256 private key (PEM, or the 32-byte scalar in base64url)",
        )
        pem = ""
    else:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        raw = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        public["public_key"] = b64url(raw)
        public["fingerprint"] = _public_fingerprint(key.public_key())
    check.require(
        config.subject.startswith(("mailto:", "https://")) and len(config.subject) > 8,
        f"{p}subject",
        "must be a mailto: or https: URI",
    )
    return Slot(message.app_id, "webpush"), "web_push", {"private_key_pem": pem}, public


def load_vapid_private_key(text: str) -> ec.EllipticCurvePrivateKey | None:
    """A P-256 key from PEM or from the raw scalar in base64url; None if neither."""
    stripped = text.strip()
    key: Any = None
    if "PRIVATE KEY" in stripped:
        key = _load_private_key(stripped.encode(), None)
    elif stripped:
        try:
            raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
            if len(raw) == 32:
                key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        except ValueError:
            key = None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        return key
    return None


def _load_private_key(data: bytes, password: bytes | None) -> Any:
    if not data.strip():
        return None
    try:
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError):
        return None


def _public_fingerprint(public_key: Any) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _same_public_key(cert: x509.Certificate, key: Any) -> bool:
    try:
        return _public_fingerprint(cert.public_key()) == _public_fingerprint(key.public_key())
    except (AttributeError, ValueError):
        return False


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def to_proto(cred: Credential) -> credentials_pb2.Credentials:
    """The caller's view: identifiers and health, never secret material."""
    pub = cred.public
    out = credentials_pb2.Credentials(
        app_id=cred.slot.app_id,
        provider=PROVIDER_ENUMS[cred.slot.provider],
        fingerprint=pub.get("fingerprint", ""),
        last_error=cred.last_error,
    )
    env = ENVIRONMENT_ENUMS.get(cred.slot.environment, platform_pb2.APNS_ENVIRONMENT_UNSPECIFIED)
    if cred.kind == "apns_token":
        out.apns_token.CopyFrom(
            credentials_pb2.ApnsTokenAuth(
                key_id=pub["key_id"],
                team_id=pub["team_id"],
                bundle_id=pub["bundle_id"],
                environment=env,
            )
        )
    elif cred.kind == "apns_certificate":
        out.apns_certificate.CopyFrom(
            credentials_pb2.ApnsCertificateAuth(
                bundle_id=pub["bundle_id"],
                environment=env,
                subject=pub.get("subject", ""),
            )
        )
    elif cred.kind == "fcm":
        out.fcm.CopyFrom(
            credentials_pb2.FcmServiceAccount(
                project_id=pub["project_id"],
                client_email=pub["client_email"],
                private_key_id=pub["private_key_id"],
            )
        )
    else:
        out.web_push.CopyFrom(
            credentials_pb2.WebPushVapid(public_key=pub["public_key"], subject=pub["subject"])
        )
    if cred.slot.provider == "apns":
        out.apns_environment = env
    if expire_time(pub):
        out.expire_time.CopyFrom(_ts(expire_time(pub)))
    out.create_time.CopyFrom(_ts(cred.create_time))
    out.update_time.CopyFrom(_ts(cred.update_time))
    if cred.last_error_time:
        out.last_error_time.CopyFrom(_ts(cred.last_error_time))
    out.health = health_of(cred)
    return out


def expire_time(public: Mapping[str, str]) -> float:
    """When the material stops working (epoch seconds), 0 when it does not expire: only
    APNs certificates carry one (token keys, service accounts and VAPID keys do not)."""
    return float(public.get("expire_time") or 0)


def health_of(
    cred: Credential, now: float | None = None
) -> credentials_pb2.CredentialsHealth.ValueType:
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    if cred.circuit_until > now:
        return credentials_pb2.CREDENTIALS_HEALTH_CIRCUIT_OPEN
    expire = expire_time(cred.public)
    if expire and expire - now < 30 * 86400:
        return credentials_pb2.CREDENTIALS_HEALTH_EXPIRING
    return credentials_pb2.CREDENTIALS_HEALTH_OK


def _ts(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
