"""TLS for the CLI's channels: the same files and variables the services use.

The services' own channels use TLS when `HERALD_TLS_CA_FILE` is set, presenting
`HERALD_TLS_CERT_FILE` / `HERALD_TLS_KEY_FILE` as their client certificate (mTLS), with
`HERALD_TLS_SERVER_NAME` as the name checked in the server's certificate. The CLI reads
the same variables (or `--tls-ca`, `--tls-cert`, `--tls-key`, `--tls-server-name`, or
the configuration file), so one environment serves both. TLS is on when a CA or a
client certificate is given; without a CA the system's trust store checks the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.cli.errors import UsageError

# flag → (environment variable, setting name)
SOURCES = {
    "ca_file": ("--tls-ca", "HERALD_TLS_CA_FILE", "tls_ca_file"),
    "cert_file": ("--tls-cert", "HERALD_TLS_CERT_FILE", "tls_cert_file"),
    "key_file": ("--tls-key", "HERALD_TLS_KEY_FILE", "tls_key_file"),
    "server_name": ("--tls-server-name", "HERALD_TLS_SERVER_NAME", "tls_server_name"),
}


@dataclass(frozen=True)
class TlsOptions:
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file)


@dataclass(frozen=True)
class ChannelSecurity:
    """What every channel of the CLI is opened with; no credentials means plaintext."""

    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def tls(self) -> bool:
        return self.credentials is not None


def from_environment(given: dict[str, str | None]) -> TlsOptions:
    """Each option from its flag, else its HERALD_TLS_* variable, else (only when
    HERALD_CONFIG_FILE names a file) the file; unset stays empty."""
    values = {
        name: given.get(name) or os.environ.get(variable, "")
        for name, (_, variable, _) in SOURCES.items()
    }
    if os.environ.get("HERALD_CONFIG_FILE") and not any(values.values()):
        from services.core.config import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError as error:
            raise UsageError(str(error)) from None
        values = {name: str(getattr(settings, setting)) for name, (*_, setting) in SOURCES.items()}
    return TlsOptions(**values)


def _pem(name: str, path: str) -> bytes:
    flag, variable, _ = SOURCES[name]
    try:
        content = Path(path).read_bytes()
    except OSError as error:
        raise UsageError(
            f"{flag} ({variable}): cannot read {path!r}: {error.strerror or error}"
        ) from None
    if b"-----BEGIN " not in content:
        raise UsageError(f"{flag} ({variable}): {path!r} is not a PEM file")
    return content


def security(options: TlsOptions) -> ChannelSecurity:
    """Channel credentials from the files, checked first so a wrong path is a usage
    error (exit 2) naming the option, not a failed handshake."""
    if bool(options.cert_file) != bool(options.key_file):
        raise UsageError(
            "--tls-cert and --tls-key go together (HERALD_TLS_CERT_FILE, HERALD_TLS_KEY_FILE)"
        )
    if not options.enabled:
        if options.server_name:
            raise UsageError(
                "--tls-server-name (HERALD_TLS_SERVER_NAME) needs TLS: add --tls-ca "
                "(HERALD_TLS_CA_FILE)"
            )
        return ChannelSecurity()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_pem("ca_file", options.ca_file) if options.ca_file else None,
        private_key=_pem("key_file", options.key_file) if options.key_file else None,
        certificate_chain=_pem("cert_file", options.cert_file) if options.cert_file else None,
    )
    name = options.server_name
    return ChannelSecurity(credentials, (("grpc.ssl_target_name_override", name),) if name else ())
