"""A span exporter that writes into the local trace store (services/core/trace_store.py).

It runs where every SDK exporter runs: in the BatchSpanProcessor's background thread,
so it uses the synchronous Redis client and never touches the services' event loops.
One pipeline per batch (per trace: RPUSH, LTRIM to the cap, EXPIRE; per notification
named by a span: RPUSH, EXPIRE, whether the trace is at its cap or not). The processor
queues at most `max_queue_size` spans and drops beyond that, so a slow or absent Redis
costs lost spans, never a slower RPC. A failure is logged once (until the next success)
and the batch is dropped: spans are diagnostics, not data worth retrying for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from services.core.config import Settings
from services.core.trace_store import (
    NOTIFICATION_ATTRIBUTE,
    encode,
    notification_key,
    trace_id_hex,
    trace_key,
)

log = logging.getLogger("herald.tracing")

# Seconds a Redis command of the exporter may take: a stuck Redis must not hold the
# processor's thread (and its full queue) for long.
REDIS_TIMEOUT_SECONDS = 2.0
# `herald trace` right after a send should find the spans, so the store is written
# every second rather than the SDK's 5 s (OTEL_BSP_SCHEDULE_DELAY still wins).
SCHEDULE_DELAY_MS = 1000
# What a Redis or Redis Cluster client raises when the store cannot be written (a
# cluster's own errors are not all RedisErrors).
_REDIS_FAILURES = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
# Traces known to be at the cap: their later spans are dropped here, without a write.
FULL_TRACES_REMEMBERED = 10_000


# Root spans that would each be a one-span trace nobody looks up, one every few
# seconds forever: a background loop's Redis command outside any trace (queue polls,
# samplers) and the probes' health checks.
_REDIS_SCOPE = "opentelemetry.instrumentation.redis"
_PROBE_RPCS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def worth_storing(span: ReadableSpan) -> bool:
    if span.parent is not None:
        return True
    scope = span.instrumentation_scope
    if scope is not None and scope.name.startswith(_REDIS_SCOPE):
        return False
    return not span.name.startswith(_PROBE_RPCS)


class RedisSpanExporter(SpanExporter):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ttl = settings.trace_store_ttl_seconds
        self._cap = settings.trace_store_max_spans
        self._client: Any = None  # made on the first export: a cluster client connects at once
        self._failing = False
        self._full: OrderedDict[str, None] = OrderedDict()

    def _redis(self) -> Any:
        if self._client is None:
            options: dict[str, Any] = {
                "socket_timeout": REDIS_TIMEOUT_SECONDS,
                "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            }
            url = self._settings.redis_url
            if self._settings.redis_cluster:
                self._client = redis.RedisCluster.from_url(url, **options)
            else:
                self._client = redis.Redis.from_url(url, max_connections=2, **options)
        return self._client

    def _grouped(
        self, spans: Sequence[ReadableSpan]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The encoded spans per trace (not for traces at the cap) and per notification
        key (every span that names a notification)."""
        by_trace: dict[str, list[str]] = {}
        by_notification: dict[str, list[str]] = {}
        for span in spans:
            if span.context is None or not worth_storing(span):
                continue
            trace_id = trace_id_hex(span.context.trace_id)
            notification = (span.attributes or {}).get(NOTIFICATION_ATTRIBUTE)
            full = trace_id in self._full
            if full and not notification:
                continue
            encoded = encode(span)
            if not full:
                by_trace.setdefault(trace_id, []).append(encoded)
            if notification:
                key = notification_key(trace_id, str(notification))
                by_notification.setdefault(key, []).append(encoded)
        return by_trace, by_notification

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        by_trace, by_notification = self._grouped(spans)
        if not by_trace and not by_notification:
            return SpanExportResult.SUCCESS
        # The processor already suppresses instrumentation around export; this keeps
        # the store's own Redis commands out of the traces whoever calls export.
        with suppress_instrumentation():
            try:
                lengths = self._write(by_trace, by_notification)
            except _REDIS_FAILURES as error:
                if not self._failing:
                    log.warning(
                        "spans not stored: the trace store's Redis failed; spans are "
                        "dropped until it answers again",
                        extra={"error": f"{type(error).__name__}: {error}"},
                    )
                    self._failing = True
                self._drop_client()  # reconnect next time (a cluster may have moved)
                return SpanExportResult.FAILURE
        if self._failing:
            log.info("spans stored again: the trace store's Redis answers")
            self._failing = False
        for trace_id, length in lengths.items():
            if length >= self._cap:
                self._remember_full(trace_id)
        return SpanExportResult.SUCCESS

    def _write(
        self, by_trace: dict[str, list[str]], by_notification: dict[str, list[str]]
    ) -> dict[str, int]:
        pipe = self._redis().pipeline(transaction=False)
        for trace_id, items in by_trace.items():
            key = trace_key(trace_id)
            pipe.rpush(key, *items)
            pipe.ltrim(key, 0, self._cap - 1)
            pipe.expire(key, self._ttl)
        for key, items in by_notification.items():
            # No trim: a notification has a few spans per attempt and few attempts.
            pipe.rpush(key, *items)
            pipe.expire(key, self._ttl)
        replies = pipe.execute()
        # The first three replies per trace: RPUSH's (the list's length after the
        # push), LTRIM's, EXPIRE's.
        return {trace_id: int(replies[3 * i]) for i, trace_id in enumerate(by_trace)}

    def _remember_full(self, trace_id: str) -> None:
        self._full[trace_id] = None
        if len(self._full) > FULL_TRACES_REMEMBERED:
            self._full.popitem(last=False)

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # Its connections may be broken already; there is nothing else to hand back.
            with contextlib.suppress(*_REDIS_FAILURES):
                client.close()

    def shutdown(self) -> None:
        self._drop_client()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here; the processor holds the queue


class OncePerInterval(logging.Filter):
    """Lets a repeated warning through once per interval.

    The SDK's batch processor warns "Queue full, dropping span" for every span it
    drops, on the thread that ended the span (an RPC's): under overload that is a log
    line per span exactly when the process has no time to spare.
    """

    def __init__(self, prefix: str, interval_seconds: float = 60.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval_seconds
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval
        return True


_queue_full = OncePerInterval("Queue full")


def quiet_queue_full_warnings() -> None:
    """At most one "Queue full" warning a minute from the SDK's span processors."""
    sdk_logger = logging.getLogger("opentelemetry.sdk._shared_internal")
    if _queue_full not in sdk_logger.filters:
        sdk_logger.addFilter(_queue_full)


def local_store_processor(settings: Settings) -> BatchSpanProcessor:
    """The batch processor (its own thread) that feeds the local trace store."""
    delay = None if os.environ.get("OTEL_BSP_SCHEDULE_DELAY") else SCHEDULE_DELAY_MS
    quiet_queue_full_warnings()
    return BatchSpanProcessor(RedisSpanExporter(settings), schedule_delay_millis=delay)
