"""One notification, one trace: from the RPC that caused it, through every service and
the queue, to the provider's answer (issue 7's tracing requirement)."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from herald.campaign.v1 import (
    campaign_pb2,
    campaign_service_pb2,
    campaign_service_pb2_grpc,
    push_message_pb2,
)
from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from herald.identity.v1 import app_pb2, identity_service_pb2, identity_service_pb2_grpc, user_pb2
from herald.registration.v1 import registration_service_pb2, registration_service_pb2_grpc
from herald.type.v1 import platform_pb2, push_token_pb2
from services.campaign.spec import SPEC as CAMPAIGN
from services.core.config import Settings
from services.delivery.spec import SPEC as DELIVERY
from services.identity.spec import SPEC as IDENTITY
from services.registration.spec import SPEC as REGISTRATION
from services.sandbox.apns import new_device_token
from tests.integration.delivery.conftest import apns_credentials

# The session's provider sandboxes, as a fixture of this module too.
from tests.integration.delivery.conftest import sandbox as sandbox

APP = "app-1"


@pytest.fixture
def settings(settings: Settings, sandbox) -> Settings:
    apns = f"https://127.0.0.1:{sandbox.apns_port}"
    return settings.model_copy(
        update={
            "apns_production_origin": apns,
            "apns_development_origin": apns,
            "fcm_origin": f"https://127.0.0.1:{sandbox.fcm_port}",
            "provider_ca_file": str(sandbox.ca_file),
            "credentials_key": base64.b64encode(os.urandom(32)).decode(),
        }
    )


def _spans_of(
    exporters: dict[str, InMemorySpanExporter], trace_id: int
) -> dict[str, list[ReadableSpan]]:
    return {
        name: [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        for name, exporter in exporters.items()
    }


def _struct(**values: str) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def _stack(start_services, sandbox, devices: int) -> tuple[dict, dict, list[str]]:
    """The four services with in-memory span exporters, an app with APNs credentials and
    `devices` iOS devices of user alice; the exporters hold only what comes after."""
    servers = await start_services(REGISTRATION, IDENTITY, DELIVERY, CAMPAIGN)
    exporters = {}
    for name, server in servers.items():
        exporters[name] = InMemorySpanExporter()
        server.runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(exporters[name]))
    channels = {n: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for n, s in servers.items()}
    identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
    created = await identity.CreateApp(
        identity_service_pb2.CreateAppRequest(
            app_id=APP, app=app_pb2.App(display_name="Shop"), request_id=str(uuid.uuid4())
        )
    )
    await identity.UpsertUser(
        identity_service_pb2.UpsertUserRequest(
            user=user_pb2.User(external_id="alice", attributes=_struct(first_name="Alice"))
        )
    )
    await delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"]).PutCredentials(
        delivery_service_pb2.PutCredentialsRequest(
            credentials=apns_credentials(sandbox, app_id=APP)
        )
    )
    tokens = [new_device_token() for _ in range(devices)]
    registration = registration_service_pb2_grpc.RegistrationServiceStub(channels["registration"])
    for number, token in enumerate(tokens):
        await registration.RegisterDevice(
            registration_service_pb2.RegisterDeviceRequest(
                app_id=APP,
                device_id=f"phone-{number}",
                platform=platform_pb2.PLATFORM_IOS,
                os_version="17.4",
                user_id="alice",
                client_secret=created.client_secret,
                token=push_token_pb2.PushToken(apns=push_token_pb2.ApnsToken(device_token=token)),
                authorization_status=platform_pb2.AUTHORIZATION_STATUS_AUTHORIZED,
                apns_environment=platform_pb2.APNS_ENVIRONMENT_DEVELOPMENT,
            )
        )
    for exporter in exporters.values():
        exporter.clear()  # only the send's spans from here on
    return exporters, channels, tokens


async def _received(sandbox, tokens: list[str]) -> None:
    for _ in range(200):
        if all(sandbox.received("apns", token=t, status=200) for t in tokens):
            break
        await asyncio.sleep(0.05)
    assert [len(sandbox.received("apns", token=t, status=200)) for t in tokens] == [1] * len(tokens)
    await asyncio.sleep(0.3)  # the worker ends its attempt span after recording it


def _root(exporters: dict[str, InMemorySpanExporter], rpc: str) -> ReadableSpan:
    (root,) = [
        s
        for s in exporters["campaign"].get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name.endswith(f"/{rpc}")
    ]
    return root


async def test_a_transactional_push_is_one_trace_across_services_queue_and_provider(
    redis, start_services, sandbox
):
    exporters, channels, (token,) = await _stack(start_services, sandbox, 1)
    try:
        campaign = campaign_service_pb2_grpc.CampaignServiceStub(channels["campaign"])
        await campaign.SendToUsers(
            campaign_service_pb2.SendToUsersRequest(
                app_id=APP,
                user_ids=["alice"],
                request_id=str(uuid.uuid4()),
                message=push_message_pb2.PushMessage(
                    content=push_message_pb2.Content(title="Hi {{ first_name }}", body="News")
                ),
            )
        )
        await _received(sandbox, [token])
    finally:
        for channel in channels.values():
            await channel.close(None)

    root = _root(exporters, "SendToUsers")
    spans = _spans_of(exporters, root.context.trace_id)
    # Every service served part of the send inside the one trace.
    for name in ("identity", "registration", "delivery"):
        assert any(s.kind == SpanKind.SERVER for s in spans[name]), name
    attempts = [s for s in spans["delivery"] if s.name == "delivery.attempt"]
    assert len(attempts) == 1
    attempt = dict(attempts[0].attributes or {})
    assert attempt["herald.provider"] == "apns"
    assert attempt["herald.app_id"] == APP
    assert attempt["http.response.status_code"] == 200
    assert attempt["herald.apns.id"]
    assert attempt["herald.retry"] == 0
    assert token not in str(attempt)  # tokens appear redacted only
    (wait,) = [s for s in spans["delivery"] if s.name == "queue.wait"]
    waited = dict(wait.attributes or {})
    assert waited["herald.notification_id"] == attempt["herald.notification_id"]
    assert waited["herald.app_id"] == APP
    assert wait.end_time <= attempts[0].start_time  # the wait ends before the attempt begins


async def test_a_campaigns_notifications_are_in_the_trace_of_its_launch(
    redis, start_services, sandbox
):
    """The fan-out runs in Campaign's scheduler, not in the LaunchCampaign call: it
    continues the launch's trace (stored with the campaign), so every notification's
    queue wait and attempt descend from LaunchCampaign."""
    exporters, channels, tokens = await _stack(start_services, sandbox, 2)
    try:
        campaign = campaign_service_pb2_grpc.CampaignServiceStub(channels["campaign"])
        created = await campaign.CreateCampaign(
            campaign_service_pb2.CreateCampaignRequest(
                campaign=campaign_pb2.Campaign(
                    app_id=APP,
                    display_name="Sale",
                    message=push_message_pb2.PushMessage(
                        content=push_message_pb2.Content(title="Hi {{ first_name }}", body="Sale")
                    ),
                ),
                request_id=str(uuid.uuid4()),
            )
        )
        await campaign.LaunchCampaign(
            campaign_service_pb2.LaunchCampaignRequest(campaign_id=created.campaign.campaign_id)
        )
        await _received(sandbox, tokens)
    finally:
        for channel in channels.values():
            await channel.close(None)

    launch = _root(exporters, "LaunchCampaign")
    spans = _spans_of(exporters, launch.context.trace_id)
    every = {s.context.span_id: s for group in spans.values() for s in group}
    (fanout,) = [s for s in spans["campaign"] if s.name == "campaign.fanout"]
    assert fanout.parent is not None
    assert fanout.parent.span_id == launch.context.span_id
    assert dict(fanout.attributes or {})["herald.campaign_id"] == created.campaign.campaign_id
    attempts = [s for s in spans["delivery"] if s.name == "delivery.attempt"]
    assert len(attempts) == 2  # both notifications, in the launch's trace

    def ancestors(span: ReadableSpan) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in every:
            span = every[span.parent.span_id]
            names.append(span.name)
        return names

    for attempt in attempts:
        chain = ancestors(attempt)
        assert "campaign.fanout" in chain
        assert chain[-1].endswith("/LaunchCampaign")  # the root of the notification's trace
        assert any(name.endswith("/Enqueue") for name in chain)
    assert len([s for s in spans["delivery"] if s.name == "queue.wait"]) == 2
