"""JSON log lines carry the request id and the trace they belong to."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from services.core.logs import JsonFormatter, request_id_var


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("herald.test", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_log_line_inside_a_span_and_a_request_names_both():
    tracer = TracerProvider().get_tracer("test")
    token = request_id_var.set("req-7")
    try:
        with tracer.start_as_current_span("work") as span:
            line = JsonFormatter("delivery").format(_record("sent", app_id="app-1"))
            context = span.get_span_context()
    finally:
        request_id_var.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "sent"
    assert entry["service"] == "delivery"
    assert entry["request_id"] == "req-7"
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert entry["app_id"] == "app-1"


def test_a_log_line_outside_any_request_has_no_correlation_ids():
    entry = json.loads(JsonFormatter("identity").format(_record("started")))
    assert "request_id" not in entry
    assert "trace_id" not in entry
    assert entry["level"] == "INFO"
