"""Transport failures, named the way attempt records name them."""

from __future__ import annotations


class TransportError(Exception):
    """A request that got no HTTP answer.

    `reason` is the attempt reason (TIMEOUT, GOAWAY, RST_STREAM, CONNECTION_LOST,
    CONNECT_FAILED). `unprocessed` is True only when the server provably did not act on
    the request (a GOAWAY whose last_stream_id is below it, a REFUSED_STREAM reset, a
    connection that never opened): only those may be resent at once without risking a
    duplicate.
    """

    def __init__(self, reason: str, detail: str, unprocessed: bool = False) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.unprocessed = unprocessed
