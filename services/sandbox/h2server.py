"""The sandboxes' HTTP server: one asyncio protocol per connection (HTTP/2 by ALPN or by
its sniffed preface, else HTTP/1.1) and the listener that owns them.

Why not an existing framework: the sandboxes must control the wire in ways frameworks hide
(the MAX_CONCURRENT_STREAMS advertised in the connection preface, GOAWAY with a chosen
last_stream_id, RST_STREAM, dropping a connection mid-request, HTTP/2 without ALPN for
aioapns). Handlers are synchronous and return an `Outcome`; the server core applies delays
and disruptions, so the hot path never allocates a task per request.

The types handlers see live in `wire` (re-exported here), HTTP/1.1 parsing in `http1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame, SettingsFrame

from . import http1
from .wire import (
    MAX_REQUEST_BODY,
    Connection,
    Disruption,
    HttpApp,
    ListenerOptions,
    Outcome,
    Request,
    Response,
    server_tls_context,
)

__all__ = [
    "Connection",
    "Disruption",
    "HttpApp",
    "HttpListener",
    "HttpServerProtocol",
    "ListenerOptions",
    "Outcome",
    "Request",
    "Response",
    "listen",
    "server_tls_context",
]

log = logging.getLogger(__name__)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# What h2 itself enforces on inbound streams. The value advertised to the client can be
# lower (APNs starts at 1): a client that opens streams before it has read our SETTINGS
# is tolerated instead of having its connection torn down.
ENFORCED_MAX_STREAMS = 10_000
# After our GOAWAY the connection stays open until the streams it still owns are answered,
# at most this long.
GOAWAY_GRACE = 2.0
GOAWAY_LINGER = 0.25  # then, once they are, this long before closing


class _Stream:
    __slots__ = ("body", "headers")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        self.body = bytearray()


_connection_ids = iter(range(1, 1 << 62))


class HttpServerProtocol(asyncio.Protocol):
    """One client connection: HTTP/2 (ALPN or sniffed preface) or HTTP/1.1."""

    def __init__(
        self, app: HttpApp, options: ListenerOptions, on_close: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.options = options
        self.connection_id = next(_connection_ids)
        self.app_state: Any = None
        self.is_h2 = False
        self.peer_certificate: dict[str, Any] | None = None
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._mode: Literal["sniff", "h2", "h1"] = "sniff"
        self._buffer = bytearray()
        self._closed = False
        # Set once the server has decided to end the connection (GOAWAY, drop, close):
        # requests that arrive later, even in the same read, are neither processed nor
        # answered, as a real server that stopped reading would.
        self._shutting_down = False
        self._loop = asyncio.get_running_loop()
        # HTTP/2 state
        self._h2: h2.connection.H2Connection | None = None
        self._streams: dict[int, _Stream] = {}
        self._pending_out: dict[int, bytes] = {}
        self._unanswered: set[int] = set()  # dispatched, answer not sent yet (delays)
        self._goaway_last: int | None = None  # set once we sent GOAWAY
        self._goaway_answered = False  # every stream up to _goaway_last answered
        # HTTP/1.1 state: one request at a time, later pipelined ones wait in _buffer
        self._h1_busy = False
        self._h1_close_after = False
        self._h1_continued = False  # 100 Continue sent for the request being read

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if ssl_object is not None:
            self.peer_certificate = ssl_object.getpeercert() or None
        if alpn == "h2":
            self._start_h2()
        elif alpn == "http/1.1" and not self.options.h2_only:
            self._mode = "h1"

    def data_received(self, data: bytes) -> None:
        if self._shutting_down:
            return
        if self._mode == "h2":
            self._h2_received(data)
        elif self._mode == "h1":
            self._buffer += data
            self._h1_process()
        else:
            self._sniff(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._streams.clear()
        self._pending_out.clear()
        if self._on_close is not None:
            self._on_close()

    # -- Connection (what handlers may call) -----------------------------------------
    def set_max_concurrent_streams(self, value: int) -> None:
        # Deferred so the SETTINGS frame follows the answer being prepared: aioapns
        # miscounts its free streams when the raise arrives while a stream is still open.
        self._loop.call_soon(self._apply_max_concurrent_streams, value)

    def _apply_max_concurrent_streams(self, value: int) -> None:
        if self._h2 is None or self._closed:
            return
        self._h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: value})
        self._flush()

    def close(self) -> None:
        self._shutting_down = True
        if self._transport is not None and not self._closed:
            self._transport.close()

    # -- protocol detection -----------------------------------------------------------
    def _sniff(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < len(H2_PREFACE) and H2_PREFACE.startswith(bytes(self._buffer)):
            return
        pending = bytes(self._buffer)
        self._buffer.clear()
        if pending.startswith(H2_PREFACE):
            self._start_h2()
            self._h2_received(pending)
        elif self.options.h2_only:
            self.abort()
        else:
            self._mode = "h1"
            self._buffer += pending
            self._h1_process()

    # -- HTTP/2 -----------------------------------------------------------------------
    def _start_h2(self) -> None:
        self._mode = "h2"
        self.is_h2 = True
        # Header syntax validation is off: it costs ~15% of a request and the clients the
        # sandboxes serve are HTTP/2 libraries that already send well-formed headers.
        config = h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
        conn = h2.connection.H2Connection(config=config)
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: ENFORCED_MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        conn.initiate_connection()
        conn.data_to_send()  # replaced by our own preface SETTINGS below
        preface = SettingsFrame(0)
        for setting, value in conn.local_settings.items():
            preface.settings[setting] = value
        preface.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (
            self.options.initial_max_concurrent_streams
        )
        self._h2 = conn
        assert self._transport is not None
        self._transport.write(preface.serialize())

    def _h2_received(self, data: bytes) -> None:
        conn = self._h2
        assert conn is not None
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.debug("connection %d: HTTP/2 protocol error: %s", self.connection_id, exc)
            self._flush()
            self.abort()
            return
        for event in events:
            if self._shutting_down:
                return  # a GOAWAY or drop answered an earlier request of this read
            if isinstance(event, h2.events.RequestReceived):
                # END_STREAM on the HEADERS frame also yields a StreamEnded event.
                self._streams[event.stream_id] = _Stream(event.headers or [])
            elif isinstance(event, h2.events.DataReceived):
                stream = self._streams.get(event.stream_id)
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if stream is not None:
                    stream.body += event.data or b""
                    if len(stream.body) > MAX_REQUEST_BODY:
                        del self._streams[event.stream_id]
                        conn.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            elif isinstance(event, h2.events.StreamEnded):
                if event.stream_id in self._streams and event.stream_id is not None:
                    self._h2_dispatch(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._streams.pop(event.stream_id or 0, None)
                self._pending_out.pop(event.stream_id or 0, None)
            elif isinstance(event, h2.events.WindowUpdated):
                self._h2_send_pending()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self.close()
                return
        self._flush()

    def _h2_dispatch(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream_id is None:
            return
        if self._goaway_last is not None and stream_id > self._goaway_last:
            # Above our GOAWAY's last_stream_id: ignored, as RFC 9113 §6.8 says; the
            # client knows it was not processed and may resend it elsewhere.
            del self._streams[stream_id]
            return
        method = path = authority = ""
        headers: dict[str, str] = {}
        duplicates: list[str] = []
        for raw_name, raw_value in stream.headers:
            name = raw_name.decode("ascii", "replace")
            value = raw_value.decode("utf-8", "replace")
            if name[0] == ":":
                if name == ":method":
                    method = value
                elif name == ":path":
                    path = value
                elif name == ":authority":
                    authority = value
                continue
            if name in headers:
                duplicates.append(name)
            headers[name] = value
        request = Request(
            method=method,
            path=path,
            headers=headers,
            body=bytes(stream.body),
            http_version="2",
            stream_id=stream_id,
            authority=authority or headers.get("host", ""),
            duplicate_headers=tuple(duplicates),
        )
        outcome = self._call_app(request)
        if outcome.delay > 0:
            self._unanswered.add(stream_id)
            self._loop.call_later(outcome.delay, self._h2_finish, stream_id, outcome)
        else:
            # Answered within data_received, which flushes once for the whole batch: one
            # TLS write per batch instead of one per response.
            self._h2_finish(stream_id, outcome, flush=False)

    def _h2_finish(self, stream_id: int, outcome: Outcome, flush: bool = True) -> None:
        conn = self._h2
        self._unanswered.discard(stream_id)
        if self._shutting_down or conn is None:
            return
        if self._goaway_last is not None and stream_id > self._goaway_last:
            return  # refused by our GOAWAY while its (delayed) answer was pending
        self._streams.pop(stream_id, None)
        if isinstance(outcome, Disruption):
            self._h2_disrupt(stream_id, outcome)
            return
        if stream_id not in conn.streams:
            self._close_if_goaway_done()
            return  # the client reset the stream meanwhile
        headers = [(":status", str(outcome.status)), *outcome.headers]
        try:
            if outcome.body:
                conn.send_headers(stream_id, headers)
                self._pending_out[stream_id] = outcome.body
                self._h2_send_pending()
            else:
                conn.send_headers(stream_id, headers, end_stream=True)
        except h2.exceptions.StreamClosedError:
            self._pending_out.pop(stream_id, None)
        if flush:
            self._flush()
        self._close_if_goaway_done()

    def _h2_send_pending(self) -> None:
        conn = self._h2
        if conn is None or not self._pending_out:
            return
        for stream_id in list(self._pending_out):
            body = self._pending_out[stream_id]
            try:
                window = min(conn.local_flow_control_window(stream_id), len(body))
                frame_size = conn.max_outbound_frame_size
                sent = 0
                while sent < window:
                    chunk = body[sent : min(window, sent + frame_size)]
                    sent += len(chunk)
                    conn.send_data(stream_id, chunk, end_stream=sent == len(body))
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                del self._pending_out[stream_id]
                continue
            if sent == len(body):
                del self._pending_out[stream_id]
            else:
                self._pending_out[stream_id] = body[sent:]

    def _h2_disrupt(self, stream_id: int, disruption: Disruption) -> None:
        conn = self._h2
        assert conn is not None
        if disruption.kind == "rst_stream":
            if stream_id in conn.streams:
                conn.reset_stream(stream_id, disruption.error_code)
                self._flush()
            return
        if disruption.kind == "goaway":
            if self._goaway_last is not None:
                return  # one GOAWAY per connection
            last = disruption.last_stream_id
            if last is None:
                # Everything below the lowest stream not yet answered (this one, or an
                # earlier one still arriving or delayed) was processed and answered;
                # everything from it up is refused. Clients may then safely resend
                # exactly the streams above last_stream_id (httpx fails any stream at or
                # below it that has no answer yet).
                pending = [stream_id, *self._streams, *self._unanswered]
                last = max(min(pending) - 2, 0)
            # Written by hand rather than with h2's close_connection(), which would stop
            # h2 from reading the streams up to last_stream_id that we still have to answer.
            self._flush()
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = last
            goaway.error_code = disruption.error_code
            goaway.additional_data = disruption.debug_data
            assert self._transport is not None
            self._transport.write(goaway.serialize())
            self._goaway_last = last
            self._loop.call_later(GOAWAY_GRACE, self.close)
            self._close_if_goaway_done()
            return
        self.abort()

    def _close_if_goaway_done(self) -> None:
        last = self._goaway_last
        if last is None or self._shutting_down or self._goaway_answered:
            return
        if any(sid <= last for sid in self._streams) or any(
            sid <= last for sid in self._unanswered
        ):
            return
        # Everything owed is answered. Keep reading (and ignoring) a moment before
        # closing: closing a socket with unread requests makes the kernel reset it, and
        # a client still writing would see that instead of the GOAWAY.
        self._goaway_answered = True
        self._flush()
        self._loop.call_later(GOAWAY_LINGER, self.close)

    # -- HTTP/1.1 ---------------------------------------------------------------------
    def _h1_process(self) -> None:
        while not self._h1_busy and not self._shutting_down:
            parsed = self._h1_parse()
            if parsed is None:
                return
            request, keep_alive = parsed
            self._h1_busy = True
            self._h1_close_after = not keep_alive
            outcome = self._call_app(request)
            if outcome.delay > 0:
                self._loop.call_later(outcome.delay, self._h1_finish, outcome)
                return
            self._h1_finish(outcome)

    def _h1_parse(self) -> tuple[Request, bool] | None:
        parsed = http1.parse_request(self._buffer, self._h1_continued)
        if isinstance(parsed, http1.Incomplete):
            if parsed.send_continue:
                self._h1_continued = True
                assert self._transport is not None
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        if isinstance(parsed, http1.Reject):
            self._h1_reject(parsed.status)
            return None
        self._h1_continued = False
        return parsed

    def _h1_finish(self, outcome: Outcome) -> None:
        if self._shutting_down:
            return
        if isinstance(outcome, Disruption):
            # HTTP/1.1 has no GOAWAY or stream reset: the nearest a client sees is the
            # connection closing without an answer.
            self.abort()
            return
        self._h1_write(outcome)
        self._h1_busy = False
        if self._h1_close_after:
            self.close()
            return
        if self._buffer:
            self._h1_process()

    def _h1_write(self, response: Response) -> None:
        assert self._transport is not None
        self._transport.write(http1.format_response(response, self._h1_close_after))

    def _h1_reject(self, status: int) -> None:
        self._h1_close_after = True
        self._h1_write(Response(status))
        self.close()

    # -- shared -----------------------------------------------------------------------
    def _call_app(self, request: Request) -> Outcome:
        try:
            return self.app.handle(request, self)
        except Exception:
            # The path's last segment is a device token or subscription id: not logged.
            route = request.path.split("?", 1)[0].rsplit("/", 1)[0]
            log.exception("sandbox handler failed on %s %s/…", request.method, route)
            return Response(500, [("content-type", "text/plain")], b"sandbox handler error")

    def _flush(self) -> None:
        if self._h2 is None or self._transport is None or self._shutting_down:
            return
        data = self._h2.data_to_send()
        if data:
            self._transport.write(data)

    def abort(self) -> None:
        self._shutting_down = True
        if self._transport is not None and not self._closed:
            self._transport.abort()


class HttpListener:
    """A bound listening socket serving one app."""

    def __init__(self, app: HttpApp, options: ListenerOptions) -> None:
        self._app = app
        self._options = options
        self._connections: set[HttpServerProtocol] = set()
        self._drained = asyncio.Event()
        self._server: asyncio.Server | None = None

    def _new_connection(self) -> HttpServerProtocol:
        protocol: HttpServerProtocol

        def forget() -> None:
            self._connections.discard(protocol)
            if not self._connections:
                self._drained.set()

        protocol = HttpServerProtocol(self._app, self._options, forget)
        self._connections.add(protocol)
        self._drained.clear()
        return protocol

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def close(self, grace: float = 1.0) -> None:
        """Stop accepting, close every connection (TLS close_notify needs a few loop
        turns), and abort the ones still open after `grace` seconds."""
        if self._server is None:
            return
        self._server.close()
        if self._connections:
            for conn in list(self._connections):
                conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
            for conn in list(self._connections):
                conn.abort()
        await self._server.wait_closed()
        self._server = None


async def listen(app: HttpApp, host: str, port: int, options: ListenerOptions) -> HttpListener:
    listener = HttpListener(app, options)
    loop = asyncio.get_running_loop()
    listener._server = await loop.create_server(
        listener._new_connection, host, port, ssl=options.tls, backlog=1024
    )
    return listener
