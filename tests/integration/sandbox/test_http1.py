"""The HTTP/1.1 reader and writer on their own (curl's chunked bodies and 100 Continue,
pipelining, malformed input); the clients' tests cover the ordinary path."""

from __future__ import annotations

from services.sandbox import http1
from services.sandbox.wire import Response


def test_pipelined_requests_are_read_one_at_a_time():
    buf = bytearray(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    first = http1.parse_request(buf, continued=False)
    second = http1.parse_request(buf, continued=False)

    assert isinstance(first, tuple)
    assert isinstance(second, tuple)
    assert (first[0].method, first[0].path, first[0].body, first[0].authority) == (
        "POST",
        "/a",
        b"hi",
        "x",
    )
    assert (second[0].path, second[1]) == ("/b", True)
    assert buf == bytearray()
    assert http1.parse_request(buf, continued=False) == http1.Incomplete()


def test_chunked_body_and_100_continue():
    head = b"POST /c HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    buf = bytearray(head)
    assert http1.parse_request(buf, continued=False) == http1.Incomplete(send_continue=True)
    assert http1.parse_request(buf, continued=True) == http1.Incomplete()

    buf += b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    parsed = http1.parse_request(buf, continued=True)

    assert isinstance(parsed, tuple)
    assert parsed[0].body == b"abcde"
    assert buf == bytearray()


def test_malformed_requests_are_rejected():
    assert http1.parse_request(bytearray(b"NONSENSE\r\n\r\n"), False) == http1.Reject(400)
    bad_chunk = bytearray(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert http1.parse_request(bad_chunk, False) == http1.Reject(400)
    huge = bytearray(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
    assert http1.parse_request(huge, False) == http1.Reject(413)
    endless_head = bytearray(b"GET / HTTP/1.1\r\n" + b"x: y\r\n" * 20_000)
    assert http1.parse_request(endless_head, False) == http1.Reject(431)


def test_response_format():
    wire = http1.format_response(Response(201, [("location", "/m/1")], b"{}"), close=True)
    assert wire == (
        b"HTTP/1.1 201 Created\r\nlocation: /m/1\r\ncontent-length: 2\r\n"
        b"connection: close\r\n\r\n{}"
    )
