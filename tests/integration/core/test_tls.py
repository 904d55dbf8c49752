"""TLS and mTLS on a service's listener, and TLS between services."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.core.probe import PROBE_SPEC


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(
    subject: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool = False
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_cert, ca_key = _issue("herald-test-ca", None, ca=True)
    _write(tmp_path, "ca", ca_cert, ca_key)
    for name in ("server", "client"):
        cert, key = _issue(name, (ca_cert.subject, ca_key))
        _write(tmp_path, name, cert, key)
    stranger_ca, stranger_key = _issue("stranger-ca", None, ca=True)
    cert, key = _issue("stranger", (stranger_ca.subject, stranger_key))
    _write(tmp_path, "stranger", cert, key)
    return tmp_path


def _credentials(pki: Path, client: str | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}-key.pem").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )


async def _health(port: int, credentials: grpc.ChannelCredentials) -> int:
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(answer.status)


async def test_a_tls_listener_serves_tls_and_refuses_plaintext(start_service, settings, pki):
    tls = settings.model_copy(
        update={
            "tls_cert_file": str(pki / "server.pem"),
            "tls_key_file": str(pki / "server-key.pem"),
        }
    )
    server = await start_service(PROBE_SPEC, tls.model_copy(update={"registration_port": 0}))
    assert (
        await _health(server.port, _credentials(pki, None))
        == health_pb2.HealthCheckResponse.SERVING
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as plain:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(plain).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_admits_only_clients_with_a_certificate_from_the_client_ca(
    start_service, settings, pki
):
    mtls = settings.model_copy(
        update={
            "tls_cert_file": str(pki / "server.pem"),
            "tls_key_file": str(pki / "server-key.pem"),
            "tls_client_ca_file": str(pki / "ca.pem"),
            "registration_port": 0,
        }
    )
    server = await start_service(PROBE_SPEC, mtls)
    assert await _health(server.port, _credentials(pki, "client")) == 1
    for intruder in (None, "stranger"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _health(server.port, _credentials(pki, intruder))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_services_reach_each_other_over_mtls(start_service, settings, pki):
    mtls = settings.model_copy(
        update={
            "tls_cert_file": str(pki / "server.pem"),
            "tls_key_file": str(pki / "server-key.pem"),
            "tls_client_ca_file": str(pki / "ca.pem"),
            "tls_ca_file": str(pki / "ca.pem"),
            "tls_server_name": "localhost",
            "registration_port": 0,
        }
    )
    server = await start_service(PROBE_SPEC, mtls)
    runtime = server.runtime
    runtime.settings = runtime.settings.model_copy(
        update={"registration_address": f"127.0.0.1:{server.port}"}
    )
    answer = await health_pb2_grpc.HealthStub(runtime.channel("registration")).Check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
