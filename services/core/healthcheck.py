"""A health probe for a Herald listener, with TLS and mTLS: `python -m services.core.healthcheck`.

Kubernetes' native gRPC probe speaks plaintext only, so with `HERALD_TLS_*` on it can
never reach the listener. This is the exec probe that replaces it (the TLS manifests in
deploy/kubernetes/components/tls): it asks the standard `grpc.health.v1.Health` service on
the local port, over TLS when the listener serves TLS, with the same files the server
and its channels to the other services use:

- TLS is on when `HERALD_TLS_CERT_FILE` is set (the listener serves TLS exactly then);
- the server's certificate is checked against `HERALD_TLS_CA_FILE` (else the system's
  trust store), for `HERALD_TLS_SERVER_NAME` when set (the name every Herald client
  checks), else for `--server-name` (the name the other services dial: the Service's);
- the service's own certificate and key go along as the client certificate, which an
  mTLS listener (`HERALD_TLS_CLIENT_CA_FILE`) requires.

Exit status: 0 when the server answers SERVING; 1 when it answers anything else or
cannot be reached (refused, handshake failed, timed out: the line printed says which);
2 when the probe itself is misconfigured (a bad flag, an unreadable file).

Speed matters more than usual: the kubelet runs this every few seconds inside the pod's
CPU limit. It reads the environment directly rather than through `Settings` (pydantic
would triple its start-up time, ~0.2 s of CPU with grpc alone); only when
`HERALD_CONFIG_FILE` is set does it load the settings, to read that file exactly as the
server does. It writes nothing anywhere, so it runs in the read-only container.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = 0
UNHEALTHY = 1
MISCONFIGURED = 2

# field -> environment variable, as services.core.config.Settings names them.
_VARIABLES = {
    "host": "HERALD_HOST",
    "cert_file": "HERALD_TLS_CERT_FILE",
    "key_file": "HERALD_TLS_KEY_FILE",
    "ca_file": "HERALD_TLS_CA_FILE",
    "server_name": "HERALD_TLS_SERVER_NAME",
}
# Settings' default host; a server listening on every interface is asked on loopback.
_DEFAULT_HOST = "127.0.0.1"
_EVERY_INTERFACE = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}  # noqa: S104


class ProbeError(Exception):
    """The probe cannot run as configured (exit 2); the message names the variable."""


class Unhealthy(Exception):
    """The server answered something other than SERVING, or could not be reached."""


@dataclass(frozen=True)
class ListenerConfig:
    """What the probe needs to know about the listener: the server's own settings."""

    host: str = _DEFAULT_HOST
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    server_name: str = ""

    @classmethod
    def from_environment(cls) -> ListenerConfig:
        if os.environ.get("HERALD_CONFIG_FILE"):
            from services.core.config import ConfigError, load_settings

            try:
                settings = load_settings()
            except ConfigError as error:
                raise ProbeError(str(error)) from None
            return cls(
                host=settings.host,
                cert_file=settings.tls_cert_file,
                key_file=settings.tls_key_file,
                ca_file=settings.tls_ca_file,
                server_name=settings.tls_server_name,
            )
        values = {field: os.environ.get(variable) for field, variable in _VARIABLES.items()}
        return cls(**{field: value for field, value in values.items() if value is not None})

    def target(self, port: int) -> str:
        host = _EVERY_INTERFACE.get(self.host, self.host)
        if ":" in host and not host.startswith("["):  # an IPv6 address
            host = f"[{host}]"
        return f"{host}:{port}"


def _read(field: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ProbeError(
            f"{_VARIABLES[field]}: cannot read {path!r}: {error.strerror or error}"
        ) from None


def _channel(config: ListenerConfig, port: int, server_name: str) -> grpc.Channel:
    # A proxy named in the environment must not carry a probe of the local listener.
    options: list[tuple[str, str | int]] = [("grpc.enable_http_proxy", 0)]
    if not config.cert_file:
        return grpc.insecure_channel(config.target(port), options=options)
    if not config.key_file:
        raise ProbeError("HERALD_TLS_CERT_FILE and HERALD_TLS_KEY_FILE go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read("ca_file", config.ca_file) if config.ca_file else None,
        private_key=_read("key_file", config.key_file),
        certificate_chain=_read("cert_file", config.cert_file),
    )
    name = config.server_name or server_name
    if name:
        options.append(("grpc.ssl_target_name_override", name))
    return grpc.secure_channel(config.target(port), credentials, options=options)


def check(config: ListenerConfig, port: int, service: str, server_name: str, timeout: float) -> str:
    """Asks the listener once; returns the status line, or raises Unhealthy."""
    what = f"{config.target(port)} {service or '(server)'}"
    with _channel(config, port, server_name) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise Unhealthy(f"{what}: the server does not know this service") from None
            details = error.details()
            raise Unhealthy(f"{what}: {code.name}: {details}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise Unhealthy(f"{what}: {status}")
    return f"{what}: {status}"


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.core.healthcheck",
        description=(
            "Ask a Herald listener on this host for its gRPC health, over TLS (and mTLS) "
            "when HERALD_TLS_CERT_FILE is set. Exit 0: SERVING; 1: not serving or not "
            "reachable; 2: the probe is misconfigured."
        ),
    )
    parser.add_argument("--port", type=int, required=True, help="the listener's port")
    parser.add_argument(
        "--service",
        default="",
        help="the gRPC service whose health to ask, e.g. "
        "herald.registration.v1.RegistrationService (default: the whole server)",
    )
    parser.add_argument(
        "--server-name",
        default="",
        help="the name to check in the server's certificate when HERALD_TLS_SERVER_NAME "
        "is unset: the name the other services dial (the Kubernetes Service's)",
    )
    parser.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for the answer (default 2)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    if not 0 < args.port < 65536 or args.timeout <= 0:
        print("--port must be 1-65535 and --timeout positive", file=sys.stderr)
        return MISCONFIGURED
    try:
        config = ListenerConfig.from_environment()
        print(check(config, args.port, args.service, args.server_name, args.timeout))
    except ProbeError as error:
        print(f"healthcheck: {error}", file=sys.stderr)
        return MISCONFIGURED
    except Unhealthy as error:
        print(error, file=sys.stderr)
        return UNHEALTHY
    return SERVING


if __name__ == "__main__":
    sys.exit(main())
