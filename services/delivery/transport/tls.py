"""TLS for provider connections: the system trust store plus Settings.provider_ca_file,
ALPN h2, and (APNs certificate auth) a client certificate."""

from __future__ import annotations

import os
import ssl
import tempfile


def client_context(ca_file: str = "", cert_pem: str = "", key_pem: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2"])
    if cert_pem and key_pem:
        # ssl only loads client certificates from files: write them to a private file
        # (0600, in a private directory) for the duration of the call.
        with tempfile.TemporaryDirectory(prefix="herald-cert-") as directory:
            path = os.path.join(directory, "client.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(cert_pem + "\n" + key_pem)
            ctx.load_cert_chain(path)
    return ctx
