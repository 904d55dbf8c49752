"""`herald credentials put-apns-cert`: an APNs provider certificate uploaded from the
CLI sends pushes, its expiry shows in `credentials list` and in Delivery's
/metrics (herald_delivery_credentials_expiry_seconds), and bad material is refused."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token

from .conftest import create_app, run_cli

EXPIRY = "herald_delivery_credentials_expiry_seconds"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


async def test_a_certificate_from_the_cli_delivers_and_reports_its_expiry(
    start_services, redis, sandbox, tmp_path: Path
):
    servers = await start_services(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    await create_app(addresses)
    bundle = sandbox.credentials.apns_bundle_id
    pem = sandbox.apns_client_certificate(bundle).decode()
    combined = tmp_path / "push.pem"
    combined.write_text(pem)
    cert_only = tmp_path / "cert.pem"
    cert_only.write_text(pem[pem.index("-----BEGIN CERTIFICATE-----") :])
    bad_p12 = tmp_path / "bad.p12"
    bad_p12.write_bytes(b"not a PKCS#12 bundle")
    target = ["shop", "--bundle-id", bundle, "--environment", "development"]

    put = await run_cli("credentials", "put-apns-cert", *target, "--cert", str(combined),
                        addresses=addresses)  # fmt: skip
    listed = await run_cli("credentials", "list", "shop", addresses=addresses)
    token = new_device_token()
    registered = await run_cli(
        "devices", "register", "shop", "phone-1", "--platform", "ios", "--os-version", "17.4",
        "--environment", "development", "--authorization", "authorized", "--apns-token", token,
        addresses=addresses,
    )  # fmt: skip
    sent = await run_cli("send", "shop", "--device", "phone-1", "--title", "Hi", "--body", "x",
                         addresses=addresses)  # fmt: skip
    metrics = await asyncio.to_thread(_scrape, servers["delivery"].runtime.metrics.port)
    no_key = await run_cli("credentials", "put-apns-cert", *target, "--cert", str(cert_only),
                           addresses=addresses)  # fmt: skip
    not_p12 = await run_cli("credentials", "put-apns-cert", *target, "--p12", str(bad_p12),
                            "--json", addresses=addresses)  # fmt: skip

    assert put.code == 0, put.stderr
    assert "Credentials stored" in put.stdout
    assert "Apple Push Services" in put.stdout  # the certificate's subject
    key_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    assert not any(line in put.stdout + listed.stdout for line in key_lines)
    assert listed.code == 0, listed.stderr
    assert "expires" in listed.stdout
    assert re.search(r"APNS .* \d{4}-\d\d-\d\dT", listed.stdout), listed.stdout
    assert registered.code == 0, registered.stderr
    assert sent.code == 0, sent.stderr
    assert "DELIVERED" in sent.stdout
    assert sandbox.received("apns", token=token, status=200)
    (sample,) = [
        line
        for line in metrics.splitlines()
        if line.startswith(EXPIRY + "{") and 'app="shop"' in line and 'provider="apns"' in line
    ]
    assert float(sample.rsplit(" ", 1)[1]) > 86_400  # a freshly issued certificate
    assert no_key.code == 2
    assert "no PEM private key" in no_key.stderr
    assert not_p12.code == 1
    error = not_p12.error()
    assert error["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in error["field_violations"]] == [
        "credentials.apns_certificate.pkcs12.data"
    ]
