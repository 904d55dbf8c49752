"""Certificates for TLS tests, laid out as the herald-tls Secret holds them (tls.crt,
tls.key, ca.crt): a CA, and certificates it issues for server and client use."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    names: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        # One certificate per installation serves the listeners and, for mTLS, the
        # services' own calls: it needs both usages.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


@dataclass
class Pki:
    """Files as the herald-tls Secret holds them: tls.crt, tls.key, ca.crt."""

    directory: Path

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def env(self, *, mtls: bool = False, prefix: str = "") -> dict[str, str]:
        """The HERALD_TLS_* variables of the TLS overlay (and of the mTLS one)."""
        env = {
            "HERALD_TLS_CERT_FILE": self.path(f"{prefix}tls.crt"),
            "HERALD_TLS_KEY_FILE": self.path(f"{prefix}tls.key"),
            "HERALD_TLS_CA_FILE": self.path("ca.crt"),
        }
        if mtls:
            env["HERALD_TLS_CLIENT_CA_FILE"] = self.path("ca.crt")
        return env


def write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
