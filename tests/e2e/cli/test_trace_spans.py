"""`herald trace` with spans: one push through the four real services with tracing left
at its default (no OTLP endpoint: the local trace store), then the notification's span
tree from every service; and what it says when no spans are kept."""

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

from herald.campaign.v1 import campaign_service_pb2, campaign_service_pb2_grpc, push_message_pb2
from herald.delivery.v1 import delivery_service_pb2 as DS
from herald.delivery.v1 import delivery_service_pb2_grpc, notification_pb2
from herald.type.v1 import push_options_pb2
from services.campaign.spec import SPEC as CAMPAIGN_SPEC
from services.core.config import Settings
from services.core.server import RunningServer
from services.core.trace_context import context_of
from services.core.trace_export import RedisSpanExporter
from services.delivery.spec import SPEC as DELIVERY_SPEC
from services.identity.spec import SPEC as IDENTITY_SPEC
from services.registration.spec import SPEC as REGISTRATION_SPEC
from services.sandbox.apns import new_device_token
from tests.integration.delivery.conftest import apns_notification

from .conftest import create_app, create_campaign, run_cli
from .test_send_and_trace import _enqueue_and_wait, _put_credentials

DEFAULT_EXPORTER = Settings.model_fields["trace_exporter"].default
# A terminal wide enough that each span's details stay on its row.
WIDE = {"COLUMNS": "320"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Tracing as an installation gets it with nothing configured."""
    return settings.model_copy(update={"trace_exporter": DEFAULT_EXPORTER, "otlp_endpoint": ""})


@pytest.fixture
async def traced(start_services, redis) -> AsyncIterator[Any]:
    """Starts services whose tracing (processor threads, their Redis clients) ends with
    the test; `redis` empties the database first."""
    running: list[RunningServer] = []

    async def start(*specs: Any, base: Settings | None = None) -> dict[str, RunningServer]:
        servers = await start_services(*specs, base=base)
        running.extend(servers.values())
        return dict(servers)

    yield start
    for server in running:
        server.runtime.tracer_provider.shutdown()


async def _wait_delivered(stub: Any, notification_id: str) -> None:
    for _ in range(400):
        found = await stub.GetNotification(
            DS.GetNotificationRequest(notification_id=notification_id)
        )
        if found.notification.outcome == push_options_pb2.DELIVERY_OUTCOME_DELIVERED:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never delivered: {notification_id}")


async def _wait_spans(
    stub: Any, servers: list[RunningServer], trace_id: str, notification_id: str = ""
) -> None:
    """Until the attempt's span is stored (the processors write every second; flushing
    them shortens the wait)."""
    request = DS.GetTraceRequest(trace_id=trace_id, notification_id=notification_id)
    for _ in range(200):
        for server in servers:
            server.runtime.tracer_provider.force_flush()
        try:
            answer = await stub.GetTrace(request)
            if any(span.name == "delivery.attempt" for span in answer.spans):
                return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"the attempt's span of trace {trace_id} was never stored")


async def test_herald_trace_shows_the_span_tree_of_a_push_across_the_services(traced, sandbox):
    servers = await traced(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    secret = await create_app(addresses)
    demo = sandbox.credentials
    token = new_device_token()
    set_up = await asyncio.gather(
        run_cli(
            "credentials",
            "put-apns",
            "shop",
            "--key",
            str(demo.apns_key_file),
            "--key-id",
            demo.apns_key_id,
            "--team-id",
            demo.apns_team_id,
            "--bundle-id",
            demo.apns_bundle_id,
            "--environment",
            "development",
            addresses=addresses,
        ),
        run_cli("users", "upsert", "alice", "--attr", "first_name=Alice", addresses=addresses),
    )
    registered = await run_cli(
        "devices", "register", "shop", "phone", "--platform", "ios", "--os-version", "17.4",
        "--environment", "development", "--apns-token", token, "--authorization", "authorized",
        "--user-id", "alice", "--client-secret", secret,
        addresses=addresses,
    )  # fmt: skip
    assert [r.code for r in (*set_up, registered)] == [0, 0, 0], [r.stderr for r in set_up]

    async with (
        grpc.aio.insecure_channel(addresses["campaign"]) as campaign_channel,
        grpc.aio.insecure_channel(addresses["delivery"]) as delivery_channel,
    ):
        sent = await campaign_service_pb2_grpc.CampaignServiceStub(campaign_channel).SendToUsers(
            campaign_service_pb2.SendToUsersRequest(
                app_id="shop",
                user_ids=["alice"],
                request_id=str(uuid.uuid4()),
                message=push_message_pb2.PushMessage(
                    content=push_message_pb2.Content(title="Hi {{ first_name }}", body="News")
                ),
            )
        )
        notification_id = sent.results[0].devices[0].notification_id
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(delivery_channel)
        await _wait_delivered(delivery, notification_id)
        record = await delivery.GetNotification(
            DS.GetNotificationRequest(notification_id=notification_id)
        )
        trace_id = record.notification.trace_id
        await _wait_spans(delivery, list(servers.values()), trace_id)

    shown, as_json, by_trace_id = await asyncio.gather(
        run_cli("trace", notification_id, addresses=addresses, env=WIDE),
        run_cli("trace", notification_id, "--json", addresses=addresses),
        run_cli("trace", "--trace-id", trace_id, addresses=addresses, env=WIDE),
    )

    assert shown.code == 0, shown.stderr
    assert as_json.code == 0, as_json.stderr
    assert by_trace_id.code == 0, by_trace_id.stderr
    apns_id = record.notification.attempts[0].apns_id
    assert record.notification.attempts[0].trace_id == trace_id
    # The attempts first, then the tree of the notification's one trace.
    assert shown.stdout.index("Attempts (1)") < shown.stdout.index(f"Trace {trace_id}")
    attempt_row = next(line for line in shown.stdout.splitlines() if "delivery.attempt" in line)
    assert "└ delivery.attempt" in attempt_row  # indented under the call that queued it
    assert "provider=apns" in attempt_row
    assert "status=200" in attempt_row
    assert f"apns-id={apns_id}" in attempt_row
    assert "queue.wait" in shown.stdout
    assert "/herald.campaign.v1.CampaignService/SendToUsers" in shown.stdout
    assert "delivery.attempt" in by_trace_id.stdout
    assert f"apns-id={apns_id}" in by_trace_id.stdout

    data = as_json.json()
    assert data["notification_id"] == notification_id  # the record as before, plus traces
    (trace,) = data["traces"]
    assert trace["trace_id"] == trace_id
    services = {span["service"] for span in trace["spans"]}
    assert {"herald-campaign", "herald-identity", "herald-registration", "herald-delivery"} <= (
        services
    )
    (attempt,) = [s for s in trace["spans"] if s["name"] == "delivery.attempt"]
    assert attempt["attributes"]["herald.provider"] == "apns"
    assert attempt["attributes"]["http.response.status_code"] == "200"
    assert attempt["attributes"]["herald.apns.id"] == apns_id
    assert attempt["attributes"]["herald.notification_id"] == notification_id
    (root,) = [s for s in trace["spans"] if s["name"].endswith("/SendToUsers")]
    assert root["parent_span_id"] == ""  # the trace starts at the RPC that caused it
    for output in (shown.stdout, as_json.stdout, by_trace_id.stdout):
        assert token not in output  # tokens only ever redacted


async def test_without_stored_spans_herald_trace_says_so_and_still_shows_the_attempts(
    traced, settings, sandbox
):
    servers = await traced(
        REGISTRATION_SPEC,
        IDENTITY_SPEC,
        DELIVERY_SPEC,
        base=settings.model_copy(update={"trace_exporter": "none"}),
    )
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    await create_app(addresses)
    demo = sandbox.credentials
    put = await run_cli(
        "credentials", "put-apns", "shop", "--key", str(demo.apns_key_file),
        "--key-id", demo.apns_key_id, "--team-id", demo.apns_team_id,
        "--bundle-id", demo.apns_bundle_id, "--environment", "development",
        addresses=addresses,
    )  # fmt: skip
    assert put.code == 0, put.stderr
    notification_id = await _enqueue_and_wait(addresses["delivery"], new_device_token())

    shown, as_json, unknown, malformed, both = await asyncio.gather(
        run_cli("trace", notification_id, addresses=addresses),
        run_cli("trace", notification_id, "--json", addresses=addresses),
        run_cli("trace", "--trace-id", uuid.uuid4().hex, addresses=addresses),
        run_cli("trace", "--trace-id", "not-a-trace", addresses=addresses),
        run_cli("trace", notification_id, "--trace-id", uuid.uuid4().hex, addresses=addresses),
    )

    assert shown.code == 0, shown.stderr
    assert "Attempts (1)" in shown.stdout
    assert "no spans to show" in shown.stdout
    assert "HERALD_TRACE_LOCAL_COPY" in shown.stdout  # what would keep them
    (trace,) = as_json.json()["traces"]
    assert trace["spans"] == []
    assert "do not keep spans locally" in trace["missing"]
    assert unknown.code == 1
    assert unknown.stderr.startswith("error: NOT_FOUND (TRACE_NOT_FOUND): ")
    assert "local_store: off" in unknown.stderr
    assert malformed.code == 1
    assert malformed.stderr.startswith("error: INVALID_ARGUMENT (INVALID_ARGUMENT): ")
    assert "  trace_id: must be 32 hex digits" in malformed.stderr
    assert both.code == 2
    assert "one of them" in both.stderr


async def test_a_campaign_notifications_trace_shows_its_own_path_of_the_launch(traced, sandbox):
    servers = await traced(REGISTRATION_SPEC, IDENTITY_SPEC, DELIVERY_SPEC, CAMPAIGN_SPEC)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    ios = ["--platform", "ios", "--os-version", "17.4", "--environment", "development"]
    await asyncio.gather(
        *(
            run_cli(
                "devices",
                "register",
                "shop",
                f"phone-{i}",
                *ios,
                "--apns-token",
                new_device_token(),
                "--authorization",
                "authorized",
                addresses=addresses,
            )
            for i in range(3)
        )
    )
    campaign_id = await create_campaign(
        addresses, "Sale", "--title", "Hi", "--body", "News", "--platform", "ios"
    )
    launched = await run_cli("campaigns", "launch", campaign_id, "--watch", addresses=addresses)
    assert launched.code == 0, launched.stderr

    async with grpc.aio.insecure_channel(addresses["delivery"]) as channel:
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        listed = await delivery.ListNotifications(
            DS.ListNotificationsRequest(
                app_id="shop", campaign_id=campaign_id, view=notification_pb2.NOTIFICATION_VIEW_FULL
            )
        )
        assert len(listed.notifications) == 3
        chosen = listed.notifications[1]
        await _wait_delivered(delivery, chosen.notification_id)
        record = (
            await delivery.GetNotification(
                DS.GetNotificationRequest(notification_id=chosen.notification_id)
            )
        ).notification
        trace_id = record.attempts[0].trace_id
        await _wait_spans(delivery, list(servers.values()), trace_id)
        whole = await delivery.GetTrace(DS.GetTraceRequest(trace_id=trace_id))

    shown = await run_cli("trace", chosen.notification_id, addresses=addresses, env=WIDE)

    assert shown.code == 0, shown.stderr
    # The trace starts at the launch: the fan-out continued LaunchCampaign's trace.
    assert "/herald.campaign.v1.CampaignService/LaunchCampaign" in shown.stdout
    assert "campaign.fanout" in shown.stdout
    rows = [line for line in shown.stdout.splitlines() if "delivery.attempt" in line]
    assert len(rows) == 1  # this notification's attempt, not its campaign siblings'
    assert f"apns-id={record.attempts[0].apns_id}" in rows[0]
    others = sum(1 for s in whole.spans if s.name == "delivery.attempt") - 1
    if others:  # the siblings ran in the launch's trace: they are left out, and it says so
        assert "more spans of this trace" in shown.stdout
        assert f"herald trace --trace-id {trace_id}" in shown.stdout


async def test_a_notifications_spans_past_its_traces_cap_are_still_shown(traced, sandbox, settings):
    """A campaign's trace holds every recipient's spans, far more than the store keeps
    per trace: `herald trace <notification>` still shows that notification's own."""
    capped = settings.model_copy(update={"trace_store_max_spans": 10})
    servers = await traced(DELIVERY_SPEC, IDENTITY_SPEC, base=capped)
    addresses = {name: f"127.0.0.1:{server.port}" for name, server in servers.items()}
    await create_app(addresses)
    await _put_credentials(addresses, sandbox)
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{caller}-01"
    # Other work of the trace fills it to the cap first (as earlier recipients would).
    filler = TracerProvider(resource=Resource.create({"service.name": "herald-campaign"}))
    filler.add_span_processor(SimpleSpanProcessor(RedisSpanExporter(capped)))
    for index in range(10):
        filler.get_tracer("t").start_span(
            f"earlier-{index}", context=context_of({"traceparent": traceparent})
        ).end()
    filler.shutdown()

    async with grpc.aio.insecure_channel(addresses["delivery"]) as channel:
        delivery = delivery_service_pb2_grpc.DeliveryServiceStub(channel)
        late = apns_notification(new_device_token(), body="Late")
        late.app_id = "shop"
        sent = await delivery.Send(
            DS.SendRequest(notification=late, request_id=str(uuid.uuid4())),
            metadata=(("traceparent", traceparent),),
        )
        (result,) = sent.results
        await _wait_spans(delivery, list(servers.values()), trace_id, result.notification_id)
        whole = await delivery.GetTrace(DS.GetTraceRequest(trace_id=trace_id))

    shown = await run_cli("trace", result.notification_id, addresses=addresses, env=WIDE)

    assert whole.truncated
    assert not any(s.name == "delivery.attempt" for s in whole.spans)  # past the cap
    assert shown.code == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "delivery.attempt" in line]
    assert len(rows) == 1
    assert f"apns-id={result.apns_id}" in rows[0]
