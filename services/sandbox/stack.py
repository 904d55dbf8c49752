"""SandboxStack: the three provider sandboxes and the control API in one process.

In-process use (tests, Delivery's tests)::

    async with SandboxStack.start(tmp_path, ports=0) as sb:
        sb.apns.register_key(key_id, team_id, p8_pem)
        ... point a client at 127.0.0.1:sb.apns_port, trusting sb.ca_file ...
        sb.faults.add(service="apns", token=t, status=410, reason="Unregistered")
        sb.received("apns", token=t)     # what the sandbox got
        sb.counters("apns")              # {"200": 3, "410 Unregistered": 1, ...}

The demo credentials in `sb.credentials` are registered with the sandboxes at start.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .apns import ApnsSandbox, Environment
from .control import ControlApi
from .faults import FaultBook
from .fcm import FcmSandbox
from .h2server import HttpListener, ListenerOptions, listen, server_tls_context
from .pki import (
    DemoCredentials,
    TlsFiles,
    ensure_demo_credentials,
    ensure_tls,
    issue_apns_client_certificate,
)
from .webpush import WebPushSandbox

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STATE_DIR = Path(".run/sandbox")


@dataclass(frozen=True, slots=True)
class SandboxPorts:
    apns: int = 2197
    fcm: int = 8444
    webpush: int = 8445
    control: int = 8440

    @classmethod
    def ephemeral(cls) -> SandboxPorts:
        return cls(0, 0, 0, 0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SandboxPorts:
        """HERALD_SANDBOX_APNS_PORT, _FCM_PORT, _WEBPUSH_PORT, _CONTROL_PORT override."""
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            apns=int(env.get("HERALD_SANDBOX_APNS_PORT", defaults.apns)),
            fcm=int(env.get("HERALD_SANDBOX_FCM_PORT", defaults.fcm)),
            webpush=int(env.get("HERALD_SANDBOX_WEBPUSH_PORT", defaults.webpush)),
            control=int(env.get("HERALD_SANDBOX_CONTROL_PORT", defaults.control)),
        )


def _absolute(state_dir: str | os.PathLike[str]) -> Path:
    # The paths info() serves (CA file, credentials) are read by clients running in other
    # directories: a relative one would name their directory, not ours.
    return Path(os.path.abspath(state_dir))


class SandboxStack:
    def __init__(
        self,
        host: str,
        tls: TlsFiles,
        faults: FaultBook,
        apns: ApnsSandbox,
        fcm: FcmSandbox,
        webpush: WebPushSandbox,
    ) -> None:
        self.host = host
        self.state_dir = tls.ca_file.parent
        self.tls = tls
        self.faults = faults
        self.apns = apns
        self.fcm = fcm
        self.webpush = webpush
        self._credentials: DemoCredentials | None = None
        self._listeners: dict[str, HttpListener] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        ports: SandboxPorts | int | None = None,
        host: str = DEFAULT_HOST,
        apns_environment: Environment = "development",
    ) -> AsyncIterator[SandboxStack]:
        """Start everything; `ports=0` binds ephemeral ports (read them back from the
        stack), None uses the defaults or HERALD_SANDBOX_*_PORT."""
        if ports is None:
            ports = SandboxPorts.from_env()
        elif isinstance(ports, int):
            ports = SandboxPorts(ports, ports, ports, ports)
        stack = await cls._start(_absolute(state_dir), ports, host, apns_environment)
        try:
            yield stack
        finally:
            await stack.close()

    @classmethod
    async def _start(
        cls, state_dir: Path, ports: SandboxPorts, host: str, apns_environment: Environment
    ) -> SandboxStack:
        tls = ensure_tls(state_dir)
        faults = FaultBook()
        stack = cls(
            host,
            tls,
            faults,
            ApnsSandbox(faults, apns_environment),
            FcmSandbox(faults),
            WebPushSandbox(faults),
        )
        cert, key = str(tls.cert_file), str(tls.key_file)
        try:
            stack._listeners["apns"] = await listen(
                stack.apns,
                host,
                ports.apns,
                ListenerOptions(
                    tls=server_tls_context(
                        cert, key, alpn=("h2",), client_ca_file=str(tls.ca_file)
                    ),
                    h2_only=True,
                    initial_max_concurrent_streams=1,
                ),
            )
            stack._listeners["fcm"] = await listen(
                stack.fcm, host, ports.fcm, ListenerOptions(tls=server_tls_context(cert, key))
            )
            stack._listeners["webpush"] = await listen(
                stack.webpush,
                host,
                ports.webpush,
                ListenerOptions(tls=server_tls_context(cert, key)),
            )
            stack.fcm.token_uri = f"https://{host}:{stack.fcm_port}/token"
            stack.webpush.origin = f"https://{host}:{stack.webpush_port}"
            stack._credentials = ensure_demo_credentials(state_dir, stack.fcm.token_uri)
            stack._register_demo_credentials()
            stack._listeners["control"] = await listen(
                ControlApi(stack), host, ports.control, ListenerOptions(tls=None)
            )
        except BaseException:
            await stack.close()
            raise
        return stack

    def _register_demo_credentials(self) -> None:
        creds = self.credentials
        self.apns.register_key(
            creds.apns_key_id, creds.apns_team_id, creds.apns_key_file.read_bytes()
        )
        self.fcm.register_service_account(json.loads(creds.fcm_service_account_file.read_text()))

    async def close(self) -> None:
        for listener in self._listeners.values():
            await listener.close()
        self._listeners.clear()

    # -- where things are -------------------------------------------------------------
    @property
    def apns_port(self) -> int:
        return self._listeners["apns"].port

    @property
    def fcm_port(self) -> int:
        return self._listeners["fcm"].port

    @property
    def webpush_port(self) -> int:
        return self._listeners["webpush"].port

    @property
    def control_port(self) -> int:
        return self._listeners["control"].port

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    @property
    def credentials(self) -> DemoCredentials:
        """The demo credentials (registered with the sandboxes at start)."""
        if self._credentials is None:
            raise RuntimeError("the sandboxes are not started")
        return self._credentials

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def apns_client_certificate(self, bundle_id: str, environment: str = "both") -> bytes:
        """A provider certificate (key + cert PEM) the APNs sandbox accepts for `bundle_id`:
        "both" environments (Apple's universal certificate) or "development" only."""
        return issue_apns_client_certificate(self.state_dir, bundle_id, environment)

    def info(self) -> dict[str, Any]:
        """Addresses, trust anchor and demo credentials (as served by GET /info)."""
        return {
            "host": self.host,
            "apns_port": self.apns_port,
            "fcm_port": self.fcm_port,
            "webpush_port": self.webpush_port,
            "control_port": self.control_port,
            "ca_file": str(self.ca_file),
            "fcm_token_uri": self.fcm.token_uri,
            "apns_environment": self.apns.environment,
            "credentials": self.credentials.to_json(),
        }

    # -- inspection -------------------------------------------------------------------
    def _sandbox(self, service: str) -> ApnsSandbox | FcmSandbox | WebPushSandbox:
        sandboxes: dict[str, ApnsSandbox | FcmSandbox | WebPushSandbox] = {
            "apns": self.apns,
            "fcm": self.fcm,
            "webpush": self.webpush,
        }
        if service not in sandboxes:
            raise ValueError(f"unknown service {service!r}: apns, fcm or webpush")
        return sandboxes[service]

    def received(
        self,
        service: str,
        token: str | None = None,
        status: int | None = None,
        since_seq: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """What one sandbox received, oldest first: decoded payload, headers that matter,
        who was authenticated, and the answer given (status, reason)."""
        return self._sandbox(service).ledger.query(token, status, since_seq, limit)

    def counters(self, service: str | None = None) -> dict[str, Any]:
        """Answers per outcome ("200", "410 Unregistered", "injected goaway", ...)."""
        if service is not None:
            return self._sandbox(service).ledger.counters()
        return {name: self._sandbox(name).ledger.counters() for name in ("apns", "fcm", "webpush")}

    def limits(self) -> dict[str, Any]:
        """The rate limits in force (set with sb.apns/fcm/webpush.set_limits)."""
        return {
            "apns": self.apns.limits(),
            "fcm": {**self.fcm.limits(), "project_per_minute": self.fcm.default_quota_per_minute},
            "webpush": self.webpush.limits(),
        }

    def reset(self) -> None:
        """Forget token states, subscriptions' states, fault rules, rate limits (back to
        their defaults), logs and counters (registered keys and service accounts stay)."""
        self.faults.clear()
        self.apns.reset()
        self.fcm.reset()
        self.webpush.reset()
