"""The shared runtime seen through a real gRPC server on loopback, with a real Redis."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.core.interceptors import REQUEST_ID_HEADER
from services.core.status import parse_error
from tests.integration.core import probe
from tests.integration.core.probe import PROBE_SPEC, Request, Response


@pytest.fixture
async def probe_server(start_service):
    return await start_service(PROBE_SPEC)


@pytest.fixture
async def channel(probe_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as chan:
        yield chan


async def _fail(rpc, request: Request, **kwargs):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rpc(request, **kwargs)
    return caught.value


async def test_health_reports_serving_for_the_server_and_the_service(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", probe.SERVICE):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    unknown = await _fail(health.Check, health_pb2.HealthCheckRequest(service="nope.v1.X"))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_service_health_and_reflection(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    answers = [a async for a in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in answers[0].list_services_response.service}
    assert {
        probe.SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


async def test_invalid_argument_carries_error_info_and_every_field_violation(channel):
    error = await _fail(probe.call(channel), Request(service="invalid"))
    details = parse_error(error)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.message == "2 fields are invalid"
    assert (details.reason, details.domain) == ("INVALID_DEVICE", "herald.dev")
    assert details.violations == (
        ("devices[3].token", "must be 64 hexadecimal characters"),
        ("app_id", "is required"),
    )


async def test_not_found_carries_reason_and_metadata(channel):
    details = parse_error(await _fail(probe.call(channel), Request(service="missing")))
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "APP_NOT_FOUND"
    assert details.metadata == {"app_id": "a1"}


async def test_resource_exhausted_carries_a_retry_hint(channel):
    details = parse_error(await _fail(probe.call(channel), Request(service="busy")))
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.reason == "QUEUE_FULL"
    assert details.retry_after_seconds == pytest.approx(2.5)


async def test_a_crash_is_internal_and_does_not_leak_the_exception_text(channel):
    error = await _fail(probe.call(channel), Request(service="crash"))
    details = parse_error(error)
    assert details.code == grpc.StatusCode.INTERNAL
    assert details.reason == "INTERNAL"
    assert "secret-token" not in (error.details() or "")
    request_ids = [v for k, v in error.trailing_metadata() if k == REQUEST_ID_HEADER]
    assert len(request_ids) == 1
    assert len(request_ids[0]) == 32


async def test_errors_raised_mid_stream_reach_the_caller_after_the_items_sent(channel):
    received = []

    async def read_all() -> None:
        async for item in probe.stream(channel)(Request(service="invalid")):
            received.append(item.status)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert received == [Response.SERVING]
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.violations == (("cursor", "is not a cursor"),)


async def test_the_callers_request_id_is_bound_to_the_call_and_returned(channel):
    call = probe.call(channel)(
        Request(service="request-id"), metadata=((REQUEST_ID_HEADER, "req-42"),)
    )
    answer = await call
    assert answer.status == Response.SERVING  # the handler saw a request id
    trailing = await call.trailing_metadata()
    assert (REQUEST_ID_HEADER, "req-42") in list(trailing)


async def test_graceful_shutdown_finishes_in_flight_calls_and_refuses_new_ones(probe_server):
    address = f"127.0.0.1:{probe_server.port}"
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        slow = asyncio.ensure_future(probe.call(channel)(Request(service="slow")))
        await asyncio.sleep(0.2)  # the slow call is now in flight
        stopping = asyncio.ensure_future(probe_server.stop(grace=5))
        await asyncio.sleep(0.1)
        answer = await slow
        assert answer.status == Response.SERVING
        assert probe_server.servicer.finished == ["slow"]
        await stopping
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_shutdown_grace_cancels_calls_that_outlive_it(probe_server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_server.port}") as channel:
        slow = asyncio.ensure_future(probe.call(channel)(Request(service="slow")))
        await asyncio.sleep(0.2)
        await probe_server.stop(grace=0.1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await slow
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert probe_server.servicer.finished == []
