"""Redis calls are traced: a span per command, under the RPC that issued it.

The redis instrumentation patches the client class once per process, with the first
service's tracer provider (services/core/telemetry.py): one service per process, as
deployed. Tests that start several services in one process cannot see it reliably, so
this one runs Identity as its own process, with tracing as an installation gets it with
nothing configured (the local trace store), and reads the trace back from Redis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import grpc

from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from services.core.config import Settings
from services.core.embedded_redis import free_port
from services.core.trace_store import StoredSpan, read_trace
from services.identity.spec import SPEC as IDENTITY
from services.stack import wait_serving

CREATE_APP = f"/{IDENTITY.full_name}/CreateApp"


def _identity_process(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HERALD_", "REDIS_URL", "OTEL_"))  # nothing configured
    }
    env.update(
        {
            "REDIS_URL": settings.redis_url,
            "HERALD_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
            "HERALD_IDENTITY_PORT": str(port),
            "HERALD_METRICS_PORT": "0",
        }
    )
    with log.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "services.identity"], env=env, stdout=sink, stderr=sink
        )


def _is_redis(span: StoredSpan) -> bool:
    """A Redis command's span (on a Cluster the instrumentation sets no db.system)."""
    return span.kind == "CLIENT" and "db.statement" in span.attributes


async def _spans_until_redis(redis, trace_id: str) -> list[StoredSpan]:
    """The trace's stored spans once a Redis span is among them (spans are exported in
    batches, about a second after they end)."""
    spans: list[StoredSpan] = []
    for _ in range(100):
        spans, _ = await read_trace(redis, trace_id)
        if any(_is_redis(s) for s in spans):
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"no Redis span stored for trace {trace_id}: {spans}")


async def test_each_redis_command_of_an_rpc_is_a_client_span_under_its_server_span(
    settings, redis, tmp_path
):
    port = free_port()
    process = _identity_process(settings, port, tmp_path / "identity.log")
    trace_id, caller_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    try:
        assert wait_serving(f"127.0.0.1:{port}", timeout=60, process=process), (
            tmp_path / "identity.log"
        ).read_text()[-2000:]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            created = await identity_service_pb2_grpc.IdentityServiceStub(channel).CreateApp(
                identity_service_pb2.CreateAppRequest(
                    app_id="shop",
                    app=app_pb2.App(display_name="Shop"),
                    request_id=str(uuid.uuid4()),
                ),
                metadata=(("traceparent", f"00-{trace_id}-{caller_span}-01"),),
            )
        spans = await _spans_until_redis(redis, trace_id)
    finally:
        process.terminate()
        process.wait(timeout=30)

    (server,) = [s for s in spans if s.name == CREATE_APP and s.kind == "SERVER"]
    assert server.parent_span_id == caller_span  # the caller's trace went on
    commands = [s for s in spans if _is_redis(s)]
    assert commands
    by_id = {s.span_id: s for s in spans}
    for command in commands:
        assert command.service == "herald-identity"
        # Under the RPC that issued it (directly, or through a span of its own).
        parent = by_id[command.parent_span_id]
        while parent.span_id != server.span_id:
            parent = by_id[parent.parent_span_id]
        assert server.start_ns <= command.start_ns <= command.end_ns <= server.end_ns
    # The statement names the command only, never its arguments (keys, secrets).
    statements = [str(s.attributes.get("db.statement", "")) for s in commands]
    assert any(statement.startswith(("EVALSHA", "EVAL")) for statement in statements)
    assert not any(created.client_secret in str(s.attributes) for s in spans)
