"""The CLI over TLS and mTLS to a real TLS listener, with the services' own HERALD_TLS_*
variables or the --tls-* options, and plain errors when the two sides disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.config import Settings
from services.identity.spec import SPEC as IDENTITY_SPEC

# The certificates of the runtime's TLS tests: a CA, a server and a client it signed,
# and a stranger signed by another CA.
from tests.integration.core.test_tls import pki as pki

from .conftest import run_cli


def _tls(settings: Settings, pki: Path, mutual: bool = False) -> Settings:
    return settings.model_copy(
        update={
            "tls_cert_file": str(pki / "server.pem"),
            "tls_key_file": str(pki / "server-key.pem"),
            "tls_client_ca_file": str(pki / "ca.pem") if mutual else "",
            "identity_port": 0,
        }
    )


@pytest.fixture
async def tls_identity(start_service, settings, pki, redis) -> dict[str, str]:
    server = await start_service(IDENTITY_SPEC, _tls(settings, pki))
    return {"identity": f"127.0.0.1:{server.port}"}


async def test_the_cli_speaks_tls_with_the_ca_and_says_plainly_when_it_cannot(tls_identity, pki):
    addresses = tls_identity
    created = await run_cli(
        "apps",
        "create",
        "--id",
        "shop",
        "--name",
        "Shop",
        "--tls-ca",
        str(pki / "ca.pem"),
        addresses=addresses,
    )
    # The services' variables work as they are: one environment for both.
    by_env = await run_cli(
        "apps",
        "get",
        "shop",
        "--json",
        addresses=addresses,
        env={"HERALD_TLS_CA_FILE": str(pki / "ca.pem")},
    )
    ca = ("--tls-ca", str(pki / "ca.pem"))
    named = await run_cli(
        "apps", "get", "shop", *ca, "--tls-server-name", "localhost", addresses=addresses
    )
    misnamed = await run_cli(
        "apps", "get", "shop", *ca, "--tls-server-name", "wrong.example", addresses=addresses
    )
    plain = await run_cli("apps", "get", "shop", addresses=addresses)
    wrong_ca = await run_cli(
        "apps", "get", "shop", "--tls-ca", str(pki / "stranger.pem"), addresses=addresses
    )

    assert created.code == 0, created.stderr
    assert by_env.code == 0, by_env.stderr
    assert by_env.json()["app_id"] == "shop"
    assert named.code == 0, named.stderr  # a name the certificate holds
    assert "the TLS handshake failed" in misnamed.stderr
    assert "--tls-server-name" in misnamed.stderr
    for refused in (plain, wrong_ca, misnamed):
        assert refused.code == 3, refused.stderr
        assert "Traceback" not in refused.stderr
    assert "error: UNAVAILABLE: cannot reach the identity service" in plain.stderr
    assert "--tls-ca" in plain.stderr  # the hint: this service may speak TLS
    assert "the TLS handshake failed" in wrong_ca.stderr
    assert "Handshake failed with error" not in wrong_ca.stderr  # gRPC's own log stays quiet
    assert "--tls-ca" in wrong_ca.stderr


async def test_mtls_needs_the_client_certificate(start_service, settings, pki, redis):
    server = await start_service(IDENTITY_SPEC, _tls(settings, pki, mutual=True))
    addresses = {"identity": f"127.0.0.1:{server.port}"}
    ca = ("--tls-ca", str(pki / "ca.pem"))
    with_cert = await run_cli(
        "apps",
        "create",
        "--id",
        "shop",
        "--name",
        "Shop",
        *ca,
        "--tls-cert",
        str(pki / "client.pem"),
        "--tls-key",
        str(pki / "client-key.pem"),
        addresses=addresses,
    )
    without_cert = await run_cli("apps", "get", "shop", *ca, addresses=addresses)
    stranger = await run_cli(
        "apps",
        "get",
        "shop",
        *ca,
        "--tls-cert",
        str(pki / "stranger.pem"),
        "--tls-key",
        str(pki / "stranger-key.pem"),
        addresses=addresses,
    )

    assert with_cert.code == 0, with_cert.stderr
    for refused in (without_cert, stranger):
        assert refused.code == 3, refused.stderr
        assert "Traceback" not in refused.stderr
        assert "cannot reach the identity service" in refused.stderr
        assert "--tls-cert/--tls-key" in refused.stderr


async def test_tls_options_that_cannot_work_are_usage_errors(pki, tmp_path):
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello")
    missing = await run_cli("apps", "get", "shop", "--tls-ca", str(tmp_path / "nope.pem"))
    wrong_kind = await run_cli("apps", "get", "shop", "--tls-ca", str(not_pem), "--json")
    half_pair = await run_cli("apps", "get", "shop", "--tls-cert", str(pki / "client.pem"))
    name_only = await run_cli("apps", "get", "shop", "--tls-server-name", "localhost")

    assert missing.code == 2
    assert missing.stderr.startswith("error: --tls-ca (HERALD_TLS_CA_FILE): cannot read ")
    assert "No such file" in missing.stderr
    assert wrong_kind.code == 2
    assert wrong_kind.error()["message"].endswith("is not a PEM file")
    assert half_pair.code == 2
    assert "--tls-cert and --tls-key go together" in half_pair.stderr
    assert name_only.code == 2
    assert "needs TLS" in name_only.stderr
    for result in (missing, wrong_kind, half_pair, name_only):
        assert "Traceback" not in result.stderr
