"""One HTTP/2 client connection over TLS, driven by h2's state machine.

Streams are futures: `start()` opens one and returns it; events from the server
resolve it. The connection honours the server's SETTINGS_MAX_CONCURRENT_STREAMS (APNs
starts at 1 and raises it after the first good request) through `free_streams`, which
the pool reads before choosing a connection.

GOAWAY: streams above last_stream_id fail with an `unprocessed` TransportError (the
pool resends them on another connection); streams at or below it keep waiting for
their answers; no new stream is opened here afterwards.

Cost per request (docs/benchmarks/delivery.md): h2 is pure Python, so what it does per
stream is most of a send's CPU. Writes are coalesced (one TLS write per loop pass, not
one per request); open streams are not recounted by a full scan per new stream
(`_StreamCountingH2`); header blocks are HPACK-encoded without Huffman coding and without
h2's generic header validation/normalisation (our names are fixed lowercase literals;
`_check_values` keeps the one check that matters for caller-supplied values).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hpack

from services.delivery.transport.errors import TransportError

log = logging.getLogger(__name__)

# Stop opening streams well before the 2^31 stream id space runs out.
MAX_STREAM_ID = 1 << 30


# Header values h2 would refuse (it rejects NUL, CR, LF); caught before h2 sees them.
_ILLEGAL_IN_VALUE = ("\r", "\n", "\0")


class _PlainEncoder(hpack.Encoder):
    """HPACK without Huffman coding: Huffman-coding the apns-id, path and JWT of every
    request took about a fifth of h2's send cost for ~30 % fewer header bytes, which
    no provider connection is short of."""

    def encode(self, headers: Any, huffman: bool = False) -> bytes:
        return super().encode(headers, huffman=False)


class _StreamCountingH2(h2.connection.H2Connection):
    """h2 counts open streams by scanning every stream (and purging closed ones) each
    time one is opened: O(streams in flight) per request. Here the scan runs only when
    an upper bound (last count + streams opened since) could pass the server's limit, or
    every PURGE_EVERY opens to drop closed streams; the limit is enforced as exactly."""

    PURGE_EVERY = 128

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config)
        self._counted = 0
        self._opened_since = 0

    @property
    def open_outbound_streams(self) -> int:
        bound = self._counted + self._opened_since
        limit = self.remote_settings.max_concurrent_streams
        if bound + 1 <= limit and self._opened_since < self.PURGE_EVERY:
            self._opened_since += 1  # asked before each new stream: count it now
            return bound
        self._counted = self._open_streams(int(self.config.client_side))
        self._opened_since = 1
        return self._counted


def never_indexed(name: str, value: str) -> tuple[str, str]:
    """A header HPACK keeps out of its table (a value that will not repeat soon)."""
    return cast(tuple[str, str], hpack.NeverIndexedHeaderTuple(name, value))


def _check_values(headers: list[tuple[str, str]]) -> None:
    for name, value in headers:
        if any(bad in value for bad in _ILLEGAL_IN_VALUE) or value != value.strip():
            raise h2.exceptions.ProtocolError(f"invalid value for header {name!r}")


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Stream:
    future: asyncio.Future[Response]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    pending: bytes = b""  # request body not yet sent (flow control)


class H2Connection(asyncio.Protocol):
    def __init__(
        self, connection_id: str, authority: str, on_change: Callable[[H2Connection], None]
    ) -> None:
        self.connection_id = connection_id
        self.authority = authority
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._h2 = _StreamCountingH2(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                # We read :status, apns-id, location and retry-after only, each parsed
                # defensively; h2's generic checks of every answer header cost more.
                validate_inbound_headers=False,
            )
        )
        self._h2.encoder = _PlainEncoder()
        self._flush_scheduled = False
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._pings: dict[bytes, asyncio.Future[None]] = {}
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.closed = False
        self.draining = False
        self.goaway_reason = ""
        self.goaway_counted = False  # the pool counted this GOAWAY (metrics)
        self.last_activity = time.monotonic()
        self.completed = 0

    # -- what the pool reads ----------------------------------------------------------
    @property
    def max_streams(self) -> int:
        return int(self._h2.remote_settings.max_concurrent_streams)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def free_streams(self) -> int:
        if self.closed or self.draining or not self.ready.done():
            return 0
        return max(0, self.max_streams - len(self._streams))

    def transport_info(self, name: str) -> Any:
        return self._transport.get_extra_info(name) if self._transport is not None else None

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("connection %s: HTTP/2 protocol error: %s", self.connection_id, exc)
            self._flush()
            self.close()
            return
        for event in events:
            self._handle(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        detail = f"connection closed ({exc})" if exc else "connection closed by the server"
        if self.goaway_reason:
            detail += f" after GOAWAY {self.goaway_reason}"
        for stream in self._streams.values():
            if not stream.future.done():
                stream.future.set_exception(TransportError("CONNECTION_LOST", detail))
        self._streams.clear()
        for ping in self._pings.values():
            if not ping.done():
                ping.set_exception(TransportError("CONNECTION_LOST", detail))
        if not self.ready.done():
            self.ready.set_exception(TransportError("CONNECT_FAILED", detail, unprocessed=True))
        self._on_change(self)

    # -- requests ---------------------------------------------------------------------
    def start(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        unique_path: bool = False,
    ) -> tuple[int, asyncio.Future[Response]]:
        """Open a stream and send the request; the future resolves with the answer.
        `unique_path`: the path (e.g. APNs' /3/device/<token>) will not repeat soon, so
        it stays out of the HPACK table (so do headers made with `never_indexed`):
        indexing it would only evict entries that repeat."""
        if self.closed or self.draining:
            raise TransportError("CONNECTION_LOST", "connection is closing", unprocessed=True)
        try:
            stream_id = self._h2.get_next_available_stream_id()
            if stream_id > MAX_STREAM_ID:
                self.draining = True
            request_headers = [
                (":method", method),
                (":scheme", "https"),
                (":authority", self.authority),
                never_indexed(":path", path) if unique_path else (":path", path),
                *headers,
                ("content-length", str(len(body))),
            ]
            _check_values(request_headers)
            self._h2.send_headers(stream_id, request_headers, end_stream=not body)
        except (h2.exceptions.ProtocolError, h2.exceptions.TooManyStreamsError) as exc:
            raise TransportError(
                "CONNECTION_LOST", f"cannot open a stream: {exc}", unprocessed=True
            ) from exc
        stream = _Stream(self._loop.create_future(), pending=body)
        self._streams[stream_id] = stream
        if body:
            self._send_pending(stream_id, stream)
        self._flush()
        self.last_activity = time.monotonic()
        return stream_id, stream.future

    def cancel(self, stream_id: int) -> None:
        """Give up on a stream (timeout): reset it so the server may drop the work."""
        stream = self._streams.pop(stream_id, None)
        if stream is None or self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._flush()
        self._on_change(self)

    async def ping(self, time_limit: float) -> None:
        payload = time.monotonic_ns().to_bytes(8, "big")
        future: asyncio.Future[None] = self._loop.create_future()
        self._pings[payload] = future
        self._h2.ping(payload)
        self._flush()
        try:
            await asyncio.wait_for(future, time_limit)
        finally:
            self._pings.pop(payload, None)

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._h2.close_connection()
                self._write_now()  # before the transport closes
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.abort()

    # -- events -----------------------------------------------------------------------
    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers or ():
                    if name == ":status":
                        stream.status = int(value)
                    else:
                        stream.headers[str(name)] = str(value)
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self._h2.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data or b""
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                stream.future.set_result(
                    Response(stream.status, stream.headers, bytes(stream.body))
                )
            self.completed += 1
            self.last_activity = time.monotonic()
            self._on_change(self)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None and not stream.future.done():
                refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                stream.future.set_exception(
                    TransportError(
                        "RST_STREAM",
                        f"stream reset by the server ({event.error_code!s})",
                        unprocessed=refused,
                    )
                )
            self._on_change(self)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if not self.ready.done():
                self.ready.set_result(None)
            self._on_change(self)
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id, stream in list(self._streams.items()):
                if stream.pending:
                    self._send_pending(stream_id, stream)
        elif isinstance(event, h2.events.PingAckReceived):
            ping = self._pings.get(event.ping_data or b"")
            if ping is not None and not ping.done():
                ping.set_result(None)

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.draining = True
        last = event.last_stream_id or 0
        debug = (event.additional_data or b"").decode("utf-8", "replace")[:200]
        self.goaway_reason = f"(error {event.error_code!s}, last stream {last}) {debug}".strip()
        for stream_id in [s for s in self._streams if s > last]:
            stream = self._streams.pop(stream_id)
            if not stream.future.done():
                stream.future.set_exception(
                    TransportError(
                        "GOAWAY",
                        f"not processed before GOAWAY {self.goaway_reason}",
                        unprocessed=True,
                    )
                )
        self._on_change(self)

    def _send_pending(self, stream_id: int, stream: _Stream) -> None:
        try:
            window = min(self._h2.local_flow_control_window(stream_id), len(stream.pending))
            frame = self._h2.max_outbound_frame_size
            sent = 0
            while sent < window:
                chunk = stream.pending[sent : min(window, sent + frame)]
                sent += len(chunk)
                self._h2.send_data(stream_id, chunk, end_stream=sent == len(stream.pending))
            stream.pending = stream.pending[sent:]
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            stream.pending = b""

    def _flush(self) -> None:
        """Write what h2 has queued at the end of this loop pass: the requests started
        and the acknowledgements made meanwhile share one TLS record and one syscall."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._write_now)

    def _write_now(self) -> None:
        self._flush_scheduled = False
        if self._transport is None or self.closed:
            return
        data = self._h2.data_to_send()
        if data:
            self._transport.write(data)
