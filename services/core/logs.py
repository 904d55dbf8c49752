"""JSON logs correlated with the request id and the current trace.

Every record carries `request_id` (from the `x-request-id` metadata the interceptor
reads or mints) and `trace_id` / `span_id` (from the active OpenTelemetry span), so an
SRE can go from a log line to the trace and back.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

request_id_var: ContextVar[str] = ContextVar("herald_request_id", default="")

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed with `extra=` are kept."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A human-friendly line for `make run` in a terminal, with the same correlation ids."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request_id={request_id}]" if request_id else line


# Libraries that log raw HTTP/2 frames and header blocks at DEBUG: APNs requests carry
# the device token in the path and the provider JWT in `authorization`, FCM requests an
# OAuth access token. HERALD_LOG_LEVEL=DEBUG must not turn them into log lines, so these
# stay at INFO whatever the level (their warnings and errors still show).
WIRE_LOGGERS = ("hpack", "h2")


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Route the root logger to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def redact(secret: str, keep: int = 4) -> str:
    """Show only the ends of a push token or key id: enough to recognise it, not to use it."""
    if len(secret) <= 2 * keep + 3:
        return "*" * len(secret)
    return f"{secret[:keep]}…{secret[-keep:]}"
