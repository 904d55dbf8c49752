"""What the sandboxes' HTTP server and its apps share: the request a handler sees, the
outcomes it may return (an answer, or a disruption of the connection), what it may know
about the connection, and the listeners' TLS set-up."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

MAX_REQUEST_BODY = 1 << 20  # bigger than any provider accepts; bounds memory per stream


@dataclass(slots=True)
class Request:
    """One HTTP request as a handler sees it. Header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    http_version: Literal["2", "1.1"]
    stream_id: int = 0
    authority: str = ""
    duplicate_headers: tuple[str, ...] = ()


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (slow-answer injection)


@dataclass(slots=True)
class Disruption:
    """Something the server does instead of answering."""

    kind: Literal["goaway", "rst_stream", "drop"]
    # GOAWAY: highest stream the server claims to have processed; None = the stream
    # before this request (so this request is reported as not processed).
    last_stream_id: int | None = None
    error_code: int = 0
    debug_data: bytes = b""
    delay: float = 0.0


Outcome = Response | Disruption


class Connection(Protocol):
    """What a handler may know about and do to the connection carrying its request."""

    connection_id: int
    is_h2: bool
    app_state: Any
    # The client's TLS certificate as ssl.getpeercert() parses it (verified against the
    # listener's CA), or None.
    peer_certificate: dict[str, Any] | None

    def set_max_concurrent_streams(self, value: int) -> None: ...


class HttpApp(Protocol):
    def handle(self, request: Request, conn: Connection) -> Outcome: ...


@dataclass(slots=True)
class ListenerOptions:
    tls: ssl.SSLContext | None
    # APNs speaks only HTTP/2; other listeners also answer HTTP/1.1.
    h2_only: bool = False
    initial_max_concurrent_streams: int = 100


def server_tls_context(
    cert_file: str,
    key_file: str,
    alpn: Iterable[str] = ("h2", "http/1.1"),
    client_ca_file: str | None = None,
) -> ssl.SSLContext:
    """TLS for a listener; with `client_ca_file`, clients may (not must) present a
    certificate issued by that CA (APNs certificate-based authentication)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=client_ca_file)
    # Clients that send no ALPN (aioapns) still connect; the protocol is then sniffed.
    ctx.set_alpn_protocols(list(alpn))
    return ctx
