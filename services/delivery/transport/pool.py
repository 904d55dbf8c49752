"""A bounded pool of HTTP/2 connections to one origin.

- At most `max_connections` connections; a request takes the connection with the most
  free streams (by the server's MAX_CONCURRENT_STREAMS) and waits, FIFO, when every
  stream of every connection is busy and no connection may be added.
- Connections are opened on demand, with exponential backoff and jitter after a
  failed connect (a provider that refuses us is not hammered).
- Requests the server provably did not process (GOAWAY above last_stream_id,
  REFUSED_STREAM) are resent on another connection within the same deadline; any
  other failure is reported, never resent here (that could duplicate a push).
- Idle connections are PINGed every `ping_idle_seconds`; one that does not answer is
  closed. Every request has a deadline; on timeout its stream is reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.delivery.transport.connection import H2Connection, Response
from services.delivery.transport.errors import TransportError

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(frozen=True)
class PoolOptions:
    max_connections: int = 4
    connect_timeout: float = 5.0
    ping_idle_seconds: float = 300.0
    ping_timeout: float = 5.0
    reconnect_base_seconds: float = 0.2
    reconnect_max_seconds: float = 30.0
    max_resends: int = 3  # resends of provably unprocessed requests per call


@dataclass(frozen=True)
class Exchange:
    response: Response
    connection_id: str
    resent: int  # how many times the request was refused unprocessed and resent


def split_origin(origin: str) -> tuple[str, int, str]:
    """(host, port, authority) of an https origin."""
    url = urlsplit(origin)
    host = url.hostname or ""
    port = url.port or 443
    authority = host if port == 443 else f"{host}:{port}"
    return host, port, authority


def _time_out(future: asyncio.Future[Response]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class H2Pool:
    def __init__(
        self, origin: str, ssl_context: ssl.SSLContext, options: PoolOptions | None = None
    ) -> None:
        self.origin = origin
        self.host, self.port, self.authority = split_origin(origin)
        self.ssl_context = ssl_context
        self.options = options or PoolOptions()
        self.connections: list[H2Connection] = []
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._failures = 0
        self._next_connect = 0.0
        self._last_connect_error = ""
        self._closed = False
        self._pinger: asyncio.Task[None] | None = None
        self.connects = 0  # connections opened (for tests and metrics)
        self.goaways = 0  # connections that received a GOAWAY
        # Told once per connection that received a GOAWAY (metrics).
        self.on_goaway: Callable[[], None] | None = None

    # -- requests ---------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        time_limit: float,
        unique_path: bool = False,
    ) -> Exchange:
        deadline = time.monotonic() + time_limit
        resent = 0
        while True:
            conn = await self._acquire(deadline)
            try:
                stream_id, future = conn.start(method, path, headers, body, unique_path)
            except TransportError:
                resent += 1
                if resent > self.options.max_resends:
                    raise
                continue
            # A timer on the stream's own future, not wait_for: no extra task or timeout
            # context per request (the hot path), same effect.
            timer = asyncio.get_running_loop().call_later(
                max(0.0, deadline - time.monotonic()), _time_out, future
            )
            try:
                response = await future
            except TimeoutError:
                conn.cancel(stream_id)
                raise TransportError("TIMEOUT", f"no answer within {time_limit:.1f}s") from None
            except TransportError as error:
                if (
                    error.unprocessed
                    and resent < self.options.max_resends
                    and time.monotonic() < deadline
                ):
                    resent += 1
                    log.info("resending a request the server did not process: %s", error.reason)
                    continue
                raise
            finally:
                timer.cancel()
            return Exchange(response, conn.connection_id, resent)

    def retire(self, connection_id: str) -> None:
        """Stop using a connection (e.g. APNs refused its provider token); in-flight
        streams finish, then it closes."""
        for conn in self.connections:
            if conn.connection_id == connection_id:
                conn.draining = True
                self._changed(conn)

    # -- connections ------------------------------------------------------------------
    async def _acquire(self, deadline: float) -> H2Connection:
        while True:
            if self._closed:
                raise TransportError("CONNECTION_LOST", "the pool is closed", unprocessed=True)
            best: H2Connection | None = None
            for conn in self.connections:
                if conn.free_streams > 0 and (
                    best is None or conn.free_streams > best.free_streams
                ):
                    best = conn
            if best is not None:
                return best
            live = [c for c in self.connections if not c.closed and not c.draining]
            if len(live) + self._connecting < self.options.max_connections:
                await self._open(deadline)
                continue
            await self._wait(deadline)

    async def _open(self, deadline: float) -> None:
        self._connecting += 1
        try:
            wait = self._next_connect - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise TransportError(
                        "CONNECT_FAILED",
                        f"backing off after failed connects: {self._last_connect_error}",
                        unprocessed=True,
                    )
                await asyncio.sleep(wait)
            conn = await self._connect(
                min(self.options.connect_timeout, max(0.05, deadline - time.monotonic()))
            )
            self.connections.append(conn)
        finally:
            self._connecting -= 1
            self._wake(len(self._waiters))
        if self._pinger is None:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_idle())

    async def _connect(self, time_limit: float) -> H2Connection:
        loop = asyncio.get_running_loop()
        connection_id = f"{os.getpid()}-{next(_ids)}"
        try:
            async with asyncio.timeout(time_limit):
                _, conn = await loop.create_connection(
                    lambda: H2Connection(connection_id, self.authority, self._changed),
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host,
                )
                ssl_object = conn.transport_info("ssl_object")
                alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
                if alpn not in (None, "h2"):
                    conn.abort()
                    raise TransportError("CONNECT_FAILED", f"the server chose {alpn}, not HTTP/2")
                # The server's first SETTINGS says how many streams we may open.
                await conn.ready
        except (OSError, TimeoutError, ssl.SSLError, TransportError) as error:
            self._failures += 1
            backoff = min(
                self.options.reconnect_max_seconds,
                self.options.reconnect_base_seconds * 2 ** (self._failures - 1),
            )
            self._next_connect = time.monotonic() + random.uniform(backoff / 2, backoff)
            self._last_connect_error = f"{type(error).__name__}: {error}"[:200]
            raise TransportError(
                "CONNECT_FAILED", f"{self.authority}: {self._last_connect_error}", unprocessed=True
            ) from error
        self._failures = 0
        self._next_connect = 0.0
        self.connects += 1
        return conn

    def _changed(self, conn: H2Connection) -> None:
        """Called by a connection when streams free up, settings change or it closes."""
        if conn.goaway_reason and not conn.goaway_counted:
            conn.goaway_counted = True
            self.goaways += 1
            if self.on_goaway is not None:
                self.on_goaway()
        if conn.closed or (conn.draining and conn.open_streams == 0):
            if conn in self.connections:
                self.connections.remove(conn)
            conn.close()
            self._wake(len(self._waiters))
            return
        self._wake(max(1, conn.free_streams))

    async def _wait(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(
                "TIMEOUT", "no free HTTP/2 stream before the deadline", unprocessed=True
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await asyncio.wait_for(future, remaining)
        except TimeoutError:
            raise TransportError(
                "TIMEOUT", "no free HTTP/2 stream before the deadline", unprocessed=True
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)

    def _wake(self, count: int) -> None:
        while count > 0 and self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)
                count -= 1

    async def _ping_idle(self) -> None:
        period = max(0.05, self.options.ping_idle_seconds / 2)
        while not self._closed:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.open_streams or now - conn.last_activity < self.options.ping_idle_seconds:
                    continue
                try:
                    await conn.ping(self.options.ping_timeout)
                    conn.last_activity = time.monotonic()
                except (TimeoutError, TransportError):
                    log.info("connection %s did not answer PING; closing it", conn.connection_id)
                    conn.abort()

    # -- shutdown ---------------------------------------------------------------------
    async def close(self, grace: float = 5.0) -> None:
        """No new requests; in-flight ones get `grace` seconds; then every connection closes."""
        self._closed = True
        for conn in self.connections:
            conn.draining = True
        deadline = time.monotonic() + grace
        while any(c.open_streams for c in self.connections) and time.monotonic() < deadline:  # noqa: ASYNC110 - polled only at shutdown
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()
        self._wake(len(self._waiters))
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
