"""Local trust anchor and demo credentials for the sandboxes.

Everything is written once into a state directory outside git (default `.run/sandbox/`)
and reused on later starts, so clients configured from these files keep working across
restarts. Private keys are written with mode 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names a client may use for the sandboxes: loopback, plus the real provider hosts so a
# client can keep its production host name and reach the sandbox through a CONNECT proxy,
# /etc/hosts or a resolver override.
SERVER_DNS_NAMES = (
    "localhost",
    "api.push.apple.com",
    "api.sandbox.push.apple.com",
    "api.development.push.apple.com",
    "fcm.googleapis.com",
    "oauth2.googleapis.com",
)
SERVER_IPS = ("127.0.0.1", "::1")

DEMO_TEAM_ID = "HERALDTEAM"
DEMO_BUNDLE_ID = "dev.herald.demo"
DEMO_FCM_PROJECT = "herald-demo"
DEMO_VAPID_SUBJECT = "mailto:demo@herald.invalid"
_ID_ALPHABET = string.ascii_uppercase + string.digits


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkcs8_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM: what Apple's .p8, Google's service
    accounts and the TLS files all hold."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_key_id() -> str:
    """A 10-character id in Apple's style (key ids and team ids look alike)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def new_apns_key() -> tuple[str, bytes]:
    """A fresh APNs signing key: (key id, .p8 PEM) — the .p8 is PKCS#8 P-256, as Apple's."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pkcs8_pem(key)
    return new_key_id(), pem


def public_pem_of(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def new_service_account(project_id: str, token_uri: str) -> dict[str, str]:
    """A Google service-account JSON (same fields as one downloaded from the console)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = pkcs8_pem(key).decode("ascii")
    email = f"herald-sender@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/" + email,
        "universe_domain": "googleapis.com",
    }


def new_vapid_key() -> tuple[bytes, str]:
    """(private key PEM, public key as base64url uncompressed point — the applicationServerKey)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = pkcs8_pem(key)
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return pem, b64url(raw)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_tls(state_dir: Path) -> TlsFiles:
    """Create (once) a local CA and a server certificate it signs."""
    files = TlsFiles(
        ca_file=state_dir / "ca.pem",
        cert_file=state_dir / "server.pem",
        key_file=state_dir / "server-key.pem",
    )
    if files.ca_file.exists() and files.cert_file.exists() and files.key_file.exists():
        return files
    state_dir.mkdir(parents=True, exist_ok=True)
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Herald sandbox local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in SERVER_DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(state_dir / "ca-key.pem", pkcs8_pem(ca_key))
    _write_private(files.key_file, pkcs8_pem(server_key))
    files.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return files


APNS_CERT_PREFIX = {
    # Apple's subject common names say which environment a push certificate is for.
    "development": "Apple Development IOS Push Services: ",
    "both": "Apple Push Services: ",
}


def issue_apns_client_certificate(
    state_dir: Path, bundle_id: str, environment: str = "both"
) -> bytes:
    """An APNs provider certificate signed by the sandbox CA, shaped like Apple's
    (subject UID = bundle id; CN says the environment). Returns key + certificate PEM, the
    single file aioapns' `client_cert` expects."""
    if environment not in APNS_CERT_PREFIX:
        raise ValueError("an APNs certificate is for development or both environments")
    ca_key = serialization.load_pem_private_key(
        (state_dir / "ca-key.pem").read_bytes(), password=None
    )
    ca_cert = x509.load_pem_x509_certificate((state_dir / "ca.pem").read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("unexpected CA key type")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, bundle_id),
            x509.NameAttribute(NameOID.COMMON_NAME, APNS_CERT_PREFIX[environment] + bundle_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, DEMO_TEAM_ID),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = pkcs8_pem(key)
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    """Paths and identifiers of the demo credentials the sandboxes accept out of the box."""

    apns_key_file: Path  # AuthKey_<key id>.p8
    apns_key_id: str
    apns_team_id: str
    apns_bundle_id: str
    fcm_service_account_file: Path
    fcm_project_id: str
    vapid_private_key_file: Path
    vapid_public_key: str  # base64url, what a page passes as applicationServerKey
    vapid_subject: str

    def to_json(self) -> dict[str, str]:
        return {
            "apns_key_file": str(self.apns_key_file),
            "apns_key_id": self.apns_key_id,
            "apns_team_id": self.apns_team_id,
            "apns_bundle_id": self.apns_bundle_id,
            "fcm_service_account_file": str(self.fcm_service_account_file),
            "fcm_project_id": self.fcm_project_id,
            "vapid_private_key_file": str(self.vapid_private_key_file),
            "vapid_public_key": self.vapid_public_key,
            "vapid_subject": self.vapid_subject,
        }


def ensure_demo_credentials(state_dir: Path, token_uri: str) -> DemoCredentials:
    """Create the demo credentials once; on later starts only token_uri is refreshed
    (the FCM sandbox's port may differ between runs)."""
    creds_dir = state_dir / "credentials"
    creds_dir.mkdir(parents=True, exist_ok=True)
    index_file = creds_dir / "demo.json"
    if index_file.exists():
        index = json.loads(index_file.read_text())
    else:
        key_id, p8 = new_apns_key()
        _write_private(creds_dir / f"AuthKey_{key_id}.p8", p8)
        account = new_service_account(DEMO_FCM_PROJECT, token_uri)
        _write_private(creds_dir / "fcm-service-account.json", json.dumps(account).encode())
        vapid_pem, vapid_public = new_vapid_key()
        _write_private(creds_dir / "vapid-private.pem", vapid_pem)
        index = {
            "apns_key_id": key_id,
            "apns_team_id": DEMO_TEAM_ID,
            "apns_bundle_id": DEMO_BUNDLE_ID,
            "fcm_project_id": DEMO_FCM_PROJECT,
            "vapid_public_key": vapid_public,
            "vapid_subject": DEMO_VAPID_SUBJECT,
        }
        index_file.write_text(json.dumps(index, indent=2) + "\n")
    account_file = creds_dir / "fcm-service-account.json"
    account = json.loads(account_file.read_text())
    if account.get("token_uri") != token_uri:
        account["token_uri"] = token_uri
        _write_private(account_file, json.dumps(account).encode())
    return DemoCredentials(
        apns_key_file=creds_dir / f"AuthKey_{index['apns_key_id']}.p8",
        apns_key_id=index["apns_key_id"],
        apns_team_id=index["apns_team_id"],
        apns_bundle_id=index["apns_bundle_id"],
        fcm_service_account_file=account_file,
        fcm_project_id=index["fcm_project_id"],
        vapid_private_key_file=creds_dir / "vapid-private.pem",
        vapid_public_key=index["vapid_public_key"],
        vapid_subject=index["vapid_subject"],
    )
