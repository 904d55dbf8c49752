"""HTTP/1.1 for the sandboxes: parse one request from a connection's buffer, format one
answer. No I/O here: the connection (h2server) decides what to write and when."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from .wire import MAX_REQUEST_BODY, Request, Response

MAX_H1_HEAD = 64 * 1024


@dataclass(slots=True)
class Incomplete:
    """More bytes are needed. `send_continue`: the client waits for `100 Continue` before
    sending its body (curl does for large bodies)."""

    send_continue: bool = False


@dataclass(slots=True)
class Reject:
    """The request cannot be read: answer this status and close."""

    status: int


def parse_request(buf: bytearray, continued: bool) -> tuple[Request, bool] | Incomplete | Reject:
    """The first request in `buf` and whether the connection stays open after it; its bytes
    are removed from `buf`. `continued`: 100 Continue was already sent for it."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return Reject(431) if len(buf) > MAX_H1_HEAD else Incomplete()
    try:
        lines = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    except ValueError:
        return Reject(400)
    body_start = head_end + 4
    send_continue = (
        headers.get("expect", "").lower() == "100-continue"
        and len(buf) == body_start
        and not continued
    )
    if headers.get("transfer-encoding", "").lower() == "chunked":
        try:
            decoded = _decode_chunked(buf, body_start)
        except ValueError:
            return Reject(400)
        if decoded is None:
            return Incomplete(send_continue)
        body, consumed = decoded
        del buf[:consumed]
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return Reject(400)
        if length > MAX_REQUEST_BODY:
            return Reject(413)
        if len(buf) < body_start + length:
            return Incomplete(send_continue)
        body = bytes(buf[body_start : body_start + length])
        del buf[: body_start + length]
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    request = Request(
        method=method,
        path=target,
        headers=headers,
        body=body,
        http_version="1.1",
        authority=headers.get("host", ""),
    )
    return request, keep_alive


def format_response(response: Response, close: bool) -> bytes:
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {response.status} {phrase}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"content-length: {len(response.body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _decode_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    body = bytearray()
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        pos = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", pos)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2
