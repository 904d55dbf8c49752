"""`python -m services.core.healthcheck`, the Kubernetes exec probe for TLS listeners, run
as the kubelet runs it (a separate process, configured by the pod's environment) against
a real server on loopback: plaintext, TLS and mTLS, healthy, draining and unreachable.

The certificates are shaped like the ones deploy/README.md asks for: one certificate
naming the Services (not 127.0.0.1), which the probe reaches through `--server-name`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.core.config import Settings
from services.core.embedded_redis import free_port
from services.core.healthcheck import MISCONFIGURED, SERVING, UNHEALTHY
from tests.conftest import ServiceStarter
from tests.integration.core.probe import PROBE_SPEC, SERVICE
from tests.tls_files import Pki, issue, write

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Outcome:
    code: int
    out: str
    err: str


async def _probe(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """Runs the probe in its own process (not subprocess.run: the server under test is
    served by this event loop)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "REDIS_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.core.healthcheck",
        *args,
        cwd=ROOT,
        env=clean | (env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode())


# -- certificates -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = issue("herald-ca")
    write(directory / "ca", ca[0], None)
    # The Services' names, as the other services dial them; not 127.0.0.1.
    write(directory / "tls", *issue("herald", ca, ("registration", "identity")))
    stranger_ca = issue("stranger-ca")
    write(directory / "stranger-tls", *issue("stranger", stranger_ca, ("registration",)))
    return Pki(directory)


def _listener(settings: Settings, pki: Pki, *, mtls: bool = False) -> Settings:
    update = {
        "tls_cert_file": pki.path("tls.crt"),
        "tls_key_file": pki.path("tls.key"),
        "registration_port": free_port(),
    }
    if mtls:
        update["tls_client_ca_file"] = pki.path("ca.crt")
    return settings.model_copy(update=update)


# -- healthy ------------------------------------------------------------------------------


async def test_a_tls_listener_is_healthy_through_the_name_its_certificate_gives(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki))
    port = str(server.port)
    # Listening on every interface (as in a pod) is asked on loopback.
    env = pki.env() | {"HERALD_HOST": "0.0.0.0"}  # noqa: S104
    whole = await _probe("--port", port, "--server-name", "registration", env=env)
    assert (whole.code, whole.out.strip()) == (SERVING, f"127.0.0.1:{port} (server): SERVING")
    ready = await _probe(
        "--port", port, "--server-name", "registration", "--service", SERVICE, env=env
    )
    assert (ready.code, ready.out.strip()) == (SERVING, f"127.0.0.1:{port} {SERVICE}: SERVING")


async def test_an_mtls_listener_accepts_the_services_own_certificate(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki, mtls=True))
    outcome = await _probe(
        "--port", str(server.port), "--service", SERVICE, "--server-name", "registration",
        env=pki.env(mtls=True),
    )  # fmt: skip
    assert outcome.code == SERVING, outcome.err


async def test_herald_tls_server_name_is_the_name_checked_when_set(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    # Every Herald client checks HERALD_TLS_SERVER_NAME when it is set, so the probe does.
    server = await start_service(PROBE_SPEC, _listener(settings, pki))
    env = pki.env() | {"HERALD_TLS_SERVER_NAME": "identity"}
    outcome = await _probe("--port", str(server.port), "--server-name", "campaign", env=env)
    assert outcome.code == SERVING, outcome.err


async def test_a_plaintext_listener_is_probed_in_plaintext(
    start_service: ServiceStarter, settings: Settings
) -> None:
    server = await start_service(PROBE_SPEC)
    outcome = await _probe("--port", str(server.port), "--service", SERVICE)
    assert outcome.code == SERVING, outcome.err


async def test_the_settings_file_is_read_as_the_server_reads_it(
    start_service: ServiceStarter, settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki, mtls=True))
    config = tmp_path / "herald.toml"
    config.write_text(
        "\n".join(
            f'{name.removeprefix("HERALD_").lower()} = "{value}"'
            for name, value in pki.env(mtls=True).items()
        )
    )
    outcome = await _probe(
        "--port", str(server.port), "--server-name", "registration",
        env={"HERALD_CONFIG_FILE": str(config)},
    )  # fmt: skip
    assert outcome.code == SERVING, outcome.err


# -- unhealthy ----------------------------------------------------------------------------


async def test_a_draining_server_fails_both_probes(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki))
    await server.health.enter_graceful_shutdown()  # what SIGTERM does first
    port = str(server.port)
    for service in ("", SERVICE):
        outcome = await _probe(
            "--port", port, "--server-name", "registration", "--service", service,
            env=pki.env(),
        )  # fmt: skip
        assert outcome.code == UNHEALTHY
        assert outcome.err.strip().endswith(": NOT_SERVING"), outcome.err


async def test_a_service_the_server_does_not_serve_is_unhealthy(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki))
    outcome = await _probe(
        "--port", str(server.port), "--server-name", "registration",
        "--service", "herald.registration.v1.RegistrationService", env=pki.env(),
    )  # fmt: skip
    assert outcome.code == UNHEALTHY
    assert "does not know this service" in outcome.err


async def test_a_certificate_without_the_checked_name_fails_the_handshake(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki))
    # Without --server-name the probe checks 127.0.0.1, which the certificate lacks.
    for args in ((), ("--server-name", "delivery")):
        outcome = await _probe("--port", str(server.port), *args, env=pki.env())
        assert outcome.code == UNHEALTHY
        assert "UNAVAILABLE" in outcome.err, outcome.err


async def test_an_mtls_listener_refuses_a_certificate_from_another_ca(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    server = await start_service(PROBE_SPEC, _listener(settings, pki, mtls=True))
    outcome = await _probe(
        "--port", str(server.port), "--server-name", "registration",
        env=pki.env(mtls=True, prefix="stranger-"),
    )  # fmt: skip
    assert outcome.code == UNHEALTHY
    assert "UNAVAILABLE" in outcome.err, outcome.err


async def test_plaintext_and_tls_do_not_mix(
    start_service: ServiceStarter, settings: Settings, pki: Pki
) -> None:
    # The native gRPC probe's failure: plaintext against a TLS listener.
    tls = await start_service(PROBE_SPEC, _listener(settings, pki))
    outcome = await _probe("--port", str(tls.port), "--timeout", "1")
    assert outcome.code == UNHEALTHY
    assert "UNAVAILABLE" in outcome.err or "DEADLINE_EXCEEDED" in outcome.err, outcome.err
    plain = await start_service(PROBE_SPEC)
    outcome = await _probe(
        "--port", str(plain.port), "--server-name", "registration", "--timeout", "1",
        env=pki.env(),
    )  # fmt: skip
    assert outcome.code == UNHEALTHY


async def test_nothing_listening_is_unhealthy() -> None:
    outcome = await _probe("--port", str(free_port()))
    assert outcome.code == UNHEALTHY
    assert "UNAVAILABLE" in outcome.err


# -- misconfigured ------------------------------------------------------------------------


async def test_an_unreadable_certificate_names_its_variable(pki: Pki) -> None:
    env = pki.env() | {"HERALD_TLS_KEY_FILE": "/nonexistent/tls.key"}
    outcome = await _probe("--port", str(free_port()), env=env)
    assert outcome.code == MISCONFIGURED
    assert "HERALD_TLS_KEY_FILE: cannot read '/nonexistent/tls.key'" in outcome.err
    assert not outcome.out


async def test_bad_arguments_are_a_usage_error() -> None:
    for args in ((), ("--port", "0"), ("--port", "50051", "--timeout", "0")):
        outcome = await _probe(*args)
        assert outcome.code == MISCONFIGURED, args
        assert outcome.err, args
