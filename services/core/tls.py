"""TLS for Herald's gRPC listeners and for the services' calls to each other.

Configured by files (docs/configuration.md): a certificate and key turn every listener
to TLS; a client CA makes it mTLS (clients must present a certificate it signed); a CA
file makes the services' own channels use TLS, presenting this service's certificate.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from services.core.config import Settings


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert_file:
        return None
    client_ca = _read(settings.tls_client_ca_file)
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    if not settings.tls_ca_file:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )


def channel_options(settings: Settings) -> list[tuple[str, str]]:
    """Lets the services reach each other by IP while checking the certificate's name."""
    if settings.tls_server_name:
        return [("grpc.ssl_target_name_override", settings.tls_server_name)]
    return []
