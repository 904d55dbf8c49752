"""GetTrace: the spans the services stored locally, read back through Delivery, with
bad input, unknown traces and app keys held to their own app's traces."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from herald.delivery.v1 import delivery_service_pb2 as DS
from herald.delivery.v1 import delivery_service_pb2_grpc, notification_pb2, trace_pb2
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_options_pb2, push_token_pb2
from services.core.auth import ADMIN_KEY_HEADER, API_KEY_HEADER
from services.core.config import Settings
from services.core.server import RunningServer
from services.core.status import ErrorDetails, parse_error
from services.core.trace_export import RedisSpanExporter
from services.delivery.spec import SPEC as DELIVERY
from services.identity.spec import SPEC as IDENTITY
from services.sandbox.apns import new_device_token

from .conftest import (
    apns_credentials,
    fcm_credentials,
    fcm_notification,
    new_fcm_token,
    vapid_credentials,
    webpush_notification,
)

ADMIN = "admin-" + "a" * 40
INTERNAL = "internal-" + "i" * 40
Metadata = tuple[tuple[str, str], ...]


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


async def _spans_of(
    stub: Any,  # the async stub (the generated .pyi types only the sync one)
    servers: list[RunningServer],
    trace_id: str,
    until: str,
    metadata: Metadata = (),
) -> DS.GetTraceResponse:
    """GetTrace once a span named `until` is stored. The services' processors write
    every second; flushing them makes the wait short."""
    for _ in range(100):
        for server in servers:
            server.runtime.tracer_provider.force_flush()
        try:
            answer = await stub.GetTrace(DS.GetTraceRequest(trace_id=trace_id), metadata=metadata)
            if any(span.name == until for span in answer.spans):
                return answer
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"no span {until!r} stored for trace {trace_id}")


async def _refused(call, request, metadata: Metadata = ()) -> ErrorDetails:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=metadata)
    return parse_error(caught.value)


@pytest.fixture
def local(delivery_settings: Settings) -> Settings:
    return delivery_settings.model_copy(update={"trace_exporter": "local"})


@pytest.fixture
async def stop_tracing() -> AsyncIterator[list[RunningServer]]:
    """Servers whose tracing (a processor thread and its Redis client) ends with the test."""
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        server.runtime.tracer_provider.shutdown()


async def test_a_calls_spans_are_read_back_in_start_order_with_their_parents(
    start_service, local, stop_tracing
):
    server = await start_service(DELIVERY, local)
    stop_tracing.append(server)
    trace_id, caller_span, traceparent = _traceparent()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        await stub.ListCredentials(
            DS.ListCredentialsRequest(app_id="shop"), metadata=(("traceparent", traceparent),)
        )
        name = "/herald.delivery.v1.DeliveryService/ListCredentials"
        answer = await _spans_of(stub, [server], trace_id.upper(), until=name)

    assert answer.trace_id == trace_id  # asked in upper case, answered in lower case
    assert not answer.truncated
    (rpc,) = [s for s in answer.spans if s.name == name]
    assert rpc.service == "herald-delivery"
    assert rpc.kind == trace_pb2.SPAN_KIND_SERVER
    assert rpc.parent_span_id == caller_span  # the caller's span, outside Herald
    assert rpc.status == trace_pb2.SPAN_STATUS_UNSPECIFIED
    assert rpc.attributes["rpc.method"] == "ListCredentials"
    starts = [s.start_time.ToNanoseconds() for s in answer.spans]
    assert starts == sorted(starts)
    assert rpc.duration.ToNanoseconds() > 0


async def test_a_trace_at_the_stores_cap_is_answered_truncated(start_service, local, stop_tracing):
    capped = local.model_copy(update={"trace_store_max_spans": 10})
    server = await start_service(DELIVERY, capped)
    stop_tracing.append(server)
    # A long trace written by a service with the same settings (the real exporter).
    writer = TracerProvider(resource=Resource.create({"service.name": "herald-campaign"}))
    writer.add_span_processor(SimpleSpanProcessor(RedisSpanExporter(capped)))
    tracer = writer.get_tracer("t")
    with tracer.start_as_current_span("LaunchCampaign") as root:
        for index in range(14):
            with tracer.start_as_current_span(f"Enqueue {index}"):
                pass
    writer.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        answer = await stub.GetTrace(DS.GetTraceRequest(trace_id=trace_id))

    assert answer.truncated
    assert [s.name for s in answer.spans] == [f"Enqueue {index}" for index in range(10)]


@pytest.mark.parametrize("trace_id", ["", "abc", "g" * 32, "0" * 32, "a" * 33, "a" * 31])
async def test_a_malformed_trace_id_is_invalid_argument_naming_the_field(
    start_service, delivery_settings, trace_id
):
    server = await start_service(DELIVERY, delivery_settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        error = await _refused(stub.GetTrace, DS.GetTraceRequest(trace_id=trace_id))

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert [field for field, _ in error.violations] == ["trace_id"]


async def test_an_overlong_notification_id_is_invalid_argument_naming_the_field(
    start_service, delivery_settings
):
    server = await start_service(DELIVERY, delivery_settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        request = DS.GetTraceRequest(trace_id="a" * 32, notification_id="n" * 65)
        error = await _refused(stub.GetTrace, request)

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [field for field, _ in error.violations] == ["notification_id"]


@pytest.mark.parametrize(("exporter", "store"), [("local", "on"), ("none", "off")])
async def test_an_unknown_trace_is_not_found_and_says_whether_spans_are_kept(
    start_service, delivery_settings, exporter, store, stop_tracing
):
    server = await start_service(
        DELIVERY, delivery_settings.model_copy(update={"trace_exporter": exporter})
    )
    stop_tracing.append(server)
    trace_id = uuid.uuid4().hex
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        error = await _refused(stub.GetTrace, DS.GetTraceRequest(trace_id=trace_id))

    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.reason == "TRACE_NOT_FOUND"
    assert error.metadata == {"trace_id": trace_id, "local_store": store}
    assert trace_id in error.message


async def _make_app(identity, app_id: str) -> dict[str, str]:
    admin = ((ADMIN_KEY_HEADER, ADMIN),)
    await identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app_id=app_id, app=app_pb2.App(display_name=app_id), request_id=str(uuid.uuid4())
        ),
        metadata=admin,
    )
    keys = {}
    for scope in ("REGISTER", "FULL"):
        made = await identity.CreateApiKey(
            identity_service_pb2.CreateApiKeyRequest(
                app_id=app_id,
                api_key=app_pb2.ApiKey(
                    display_name=scope.lower(),
                    scope=app_pb2.ApiKeyScope.Value(f"API_KEY_SCOPE_{scope}"),
                ),
            ),
            metadata=admin,
        )
        keys[scope] = made.key
    return keys


async def test_an_app_key_reads_only_traces_of_its_own_app(
    start_services, local, sandbox, stop_tracing
):
    secure = local.model_copy(
        update={
            "require_api_keys": True,
            "admin_key": ADMIN,
            "internal_key": INTERNAL,
            "api_key_cache_seconds": 0.0,
        }
    )
    servers = await start_services(IDENTITY, DELIVERY, base=secure)
    stop_tracing.extend(servers.values())
    admin = ((ADMIN_KEY_HEADER, ADMIN),)
    identity_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['identity'].port}")
    delivery_channel = grpc.aio.insecure_channel(f"127.0.0.1:{servers['delivery'].port}")
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(identity_channel)
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(delivery_channel)
        shop = await _make_app(identity, "shop")
        news = await _make_app(identity, "news")
        shop_key = ((API_KEY_HEADER, shop["FULL"]),)
        await delivery.PutCredentials(
            DS.PutCredentialsRequest(credentials=apns_credentials(sandbox, app_id="shop")),
            metadata=shop_key,
        )
        # A push of shop's: its delivery.attempt span names the app.
        shop_trace, _, traceparent = _traceparent()
        sent = await delivery.Send(
            DS.SendRequest(
                notification=notification_pb2.Notification(
                    app_id="shop",
                    token=push_token_pb2.PushToken(
                        apns=push_token_pb2.ApnsToken(device_token=new_device_token())
                    ),
                    apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
                    apns=notification_pb2.ApnsPayload(title="Hi"),
                ),
                request_id=str(uuid.uuid4()),
            ),
            metadata=(*shop_key, ("traceparent", traceparent)),
        )
        assert sent.results[0].outcome == push_options_pb2.DELIVERY_OUTCOME_DELIVERED
        # An operator's call: a trace that names no app.
        admin_trace, _, traceparent = _traceparent()
        await identity.ListApps(
            identity_service_pb2.ListAppsRequest(), metadata=(*admin, ("traceparent", traceparent))
        )
        servers_list = list(servers.values())
        own = await _spans_of(
            delivery, servers_list, shop_trace, until="delivery.attempt", metadata=shop_key
        )
        by_admin = await _spans_of(
            delivery, servers_list, shop_trace, until="delivery.attempt", metadata=admin
        )
        operators = await _spans_of(
            delivery,
            servers_list,
            admin_trace,
            until="/herald.identity.v1.IdentityService/ListApps",
            metadata=admin,
        )
        request = DS.GetTraceRequest(trace_id=shop_trace)
        other_app = await _refused(delivery.GetTrace, request, ((API_KEY_HEADER, news["FULL"]),))
        register_scope = await _refused(
            delivery.GetTrace, request, ((API_KEY_HEADER, shop["REGISTER"]),)
        )
        no_key = await _refused(delivery.GetTrace, request)
        no_app = await _refused(
            delivery.GetTrace, DS.GetTraceRequest(trace_id=admin_trace), shop_key
        )
    finally:
        await identity_channel.close()
        await delivery_channel.close()

    (attempt,) = [s for s in own.spans if s.name == "delivery.attempt"]
    (send,) = [s for s in own.spans if s.name == "/herald.delivery.v1.DeliveryService/Send"]
    assert attempt.parent_span_id == send.span_id  # the attempt is the call's child
    assert attempt.kind == trace_pb2.SPAN_KIND_CLIENT
    assert attempt.attributes["herald.app_id"] == "shop"
    assert attempt.attributes["herald.provider"] == "apns"
    assert attempt.attributes["http.response.status_code"] == "200"
    assert attempt.attributes["herald.apns.id"] == sent.results[0].apns_id
    assert [s.span_id for s in by_admin.spans] == [s.span_id for s in own.spans]
    assert {s.service for s in operators.spans} == {"herald-identity"}
    assert (other_app.code, other_app.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "APP_ACCESS_DENIED",
    )
    assert (register_scope.code, register_scope.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "API_KEY_SCOPE_INSUFFICIENT",
    )
    assert (no_key.code, no_key.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
    assert (no_app.code, no_app.reason) == (grpc.StatusCode.PERMISSION_DENIED, "APP_ACCESS_DENIED")


async def test_fcm_and_web_push_attempt_spans_name_the_providers_answer(
    start_service, local, sandbox, stop_tracing
):
    """Like an APNs attempt's apns-id: the FCM message name and the Web Push Location
    (the provider's ids an SRE quotes to the provider) are on the attempt span."""
    server = await start_service(DELIVERY, local)
    stop_tracing.append(server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        for upload in (fcm_credentials(sandbox), vapid_credentials(sandbox)):
            await stub.PutCredentials(DS.PutCredentialsRequest(credentials=upload))
        answers = {}
        subscription = sandbox.webpush.create_subscription()
        for kind, notification in (
            ("fcm", fcm_notification(new_fcm_token())),
            ("webpush", webpush_notification(subscription)),
        ):
            trace_id, _, traceparent = _traceparent()
            sent = await stub.Send(
                DS.SendRequest(notification=notification, request_id=str(uuid.uuid4())),
                metadata=(("traceparent", traceparent),),
            )
            (result,) = sent.results
            assert result.outcome == push_options_pb2.DELIVERY_OUTCOME_DELIVERED
            record = await stub.GetNotification(
                DS.GetNotificationRequest(notification_id=result.notification_id)
            )
            spans = await _spans_of(stub, [server], trace_id, until="delivery.attempt")
            (attempt,) = [s for s in spans.spans if s.name == "delivery.attempt"]
            answers[kind] = (attempt.attributes, record.notification.attempts[0])

    fcm_span, fcm_attempt = answers["fcm"]
    assert fcm_span["herald.provider"] == "fcm"
    assert fcm_span["herald.fcm.message_name"] == fcm_attempt.fcm_message_name
    assert fcm_attempt.fcm_message_name.startswith("projects/")
    web_span, web_attempt = answers["webpush"]
    assert web_span["herald.provider"] == "webpush"
    assert web_span["herald.webpush.location"] == web_attempt.web_push_location
    assert web_attempt.web_push_location.startswith("https://")
    for secret in (subscription["keys"]["p256dh"], subscription["keys"]["auth"]):
        assert secret not in str(web_span)  # the subscription's keys stay out of traces
