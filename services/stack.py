"""`make run`: the whole Herald stack on one machine, in one command.

With nothing configured it starts a persistent redis-server under `.run/redis` (from the
project's own dependency), the provider sandboxes, and the four services on their fixed
local ports, prints where each listens, and stops everything cleanly on Ctrl-C. Set
REDIS_URL to use an external Redis instead; `--no-sandboxes` skips the sandboxes.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from services.core import healthcheck
from services.core.config import DEFAULT_REDIS_PORT, ConfigError, Settings, load_settings
from services.core.embedded_redis import EmbeddedRedis
from services.core.healthcheck import ListenerConfig

SERVICES = ("identity", "registration", "delivery", "campaign")
RUN_DIR = Path(".run")
# The sandboxes' default ports; HERALD_SANDBOX_<NAME>_PORT overrides each (as in the sandbox).
STARTUP_SECONDS = 120.0  # per service, while its process is alive
SANDBOX_PORTS = {"apns": 2197, "fcm": 8444, "webpush": 8445, "control": 8440}


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    where: str


def wait_serving(
    address: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    listener: ListenerConfig | None = None,
) -> bool:
    """Whether the gRPC server at `address` reports SERVING within `timeout` seconds;
    gives up early once `process` (the one that should serve there) has exited.
    `listener`: the services' TLS settings, so a stack run with HERALD_TLS_* is asked
    over TLS (plaintext without)."""
    host, _, port = address.rpartition(":")
    config = replace(listener or ListenerConfig(), host=host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            healthcheck.check(config, int(port), "", "", timeout=1)
            return True
        except healthcheck.Unhealthy:
            time.sleep(0.2)
        except healthcheck.ProbeError as error:  # e.g. an unreadable HERALD_TLS_* file
            raise RuntimeError(str(error)) from None
    return False


def _redis_configured() -> bool:
    return bool(os.environ.get("REDIS_URL") or os.environ.get("HERALD_REDIS_URL"))


def wait_listening(port: int, timeout: float) -> bool:
    """Whether something accepts connections on loopback `port` within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _local_credentials_key() -> str:
    """The at-rest key for provider credentials under `make run`, made once, kept private."""
    path = RUN_DIR / "credentials.key"
    if not path.exists():
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


class Stack:
    def __init__(self, settings: Settings, with_sandboxes: bool) -> None:
        self.settings = settings
        self.with_sandboxes = with_sandboxes
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.env = dict(os.environ)
        self.env.setdefault("HERALD_LOG_FORMAT", "text")

    def start(self) -> None:
        if not _redis_configured():
            self.redis = EmbeddedRedis(RUN_DIR / "redis", DEFAULT_REDIS_PORT, persistent=True)
            self.redis.start()
            self.env["REDIS_URL"] = self.redis.url
        self.env.setdefault("HERALD_CREDENTIALS_KEY", _local_credentials_key())
        if self.with_sandboxes and importlib.util.find_spec("services.sandbox.__main__"):
            self._start_sandboxes()
        addresses = {
            name: f"{self.settings.host}:{self.settings.port_of(name)}" for name in SERVICES
        }
        for name, address in addresses.items():  # start together, then wait for each
            self._spawn(name, ["-m", f"services.{name}"], address)
        processes = {child.name: child.process for child in self.children}
        for name, address in addresses.items():
            # Generous: on a busy machine four Python services importing at once can take
            # a while; a service that exits (bad config, taken port) fails at once.
            process = processes[name]
            if not wait_serving(address, STARTUP_SECONDS, process, self._listener()):
                why = "exited" if process.poll() is not None else "did not become healthy"
                raise RuntimeError(f"{name} {why} on {address}; see its log above")

    def _listener(self) -> ListenerConfig:
        """How the services listen: over TLS when HERALD_TLS_* say so."""
        return ListenerConfig(
            cert_file=self.settings.tls_cert_file,
            key_file=self.settings.tls_key_file,
            ca_file=self.settings.tls_ca_file,
            server_name=self.settings.tls_server_name,
        )

    def _start_sandboxes(self) -> None:
        """Start the sandboxes and point Delivery at them unless told otherwise."""
        state = RUN_DIR / "sandbox"
        ports = {
            name: int(self.env.get(f"HERALD_SANDBOX_{name.upper()}_PORT", default))
            for name, default in SANDBOX_PORTS.items()
        }
        self._spawn(
            "sandboxes",
            ["-m", "services.sandbox", "serve", "--state-dir", str(state)],
            ", ".join(f"{name} :{port}" for name, port in ports.items()),
        )
        if not wait_listening(ports["control"], timeout=20):
            raise RuntimeError("the sandboxes did not start; see their log above")
        apns = f"https://127.0.0.1:{ports['apns']}"
        self.env.setdefault("HERALD_APNS_PRODUCTION_ORIGIN", apns)
        self.env.setdefault("HERALD_APNS_DEVELOPMENT_ORIGIN", apns)
        self.env.setdefault("HERALD_FCM_ORIGIN", f"https://127.0.0.1:{ports['fcm']}")
        self.env.setdefault("HERALD_PROVIDER_CA_FILE", str((state / "ca.pem").resolve()))

    def _spawn(self, name: str, args: list[str], where: str) -> None:
        process = subprocess.Popen([sys.executable, *args], env=self.env)  # noqa: S603
        self.children.append(Child(name, process, where))

    def describe(self) -> str:
        redis = self.env.get("REDIS_URL", self.settings.redis_url)
        lines = ["", "Herald is running:", f"  {'redis':<13} {redis}"]
        lines += [f"  {child.name:<13} {child.where}" for child in self.children]
        if self.settings.metrics_port < 0:
            lines += ["", "Metrics: http://127.0.0.1:<gRPC port + 1000>/metrics (e.g. :51051)"]
        lines += ["", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)

    def first_exit(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_seconds + 5
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__)
    parser.add_argument("--no-sandboxes", action="store_true", help="do not start the sandboxes")
    options = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"herald: {error}", file=sys.stderr)
        return 2

    stack = Stack(settings, with_sandboxes=not options.no_sandboxes)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
        print(stack.describe(), flush=True)
        while not stopping:
            dead = stack.first_exit()
            if dead is not None:
                print(f"herald: {dead.name} exited with {dead.process.returncode}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    except RuntimeError as error:
        print(f"herald: {error}", file=sys.stderr)
        return 1
    finally:
        print("herald: stopping…", file=sys.stderr, flush=True)
        stack.stop()
        print("herald: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
