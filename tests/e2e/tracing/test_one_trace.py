"""One notification, one trace: from the RPC that caused it, through every service and
the queue, to the provider's answer (issue 7's tracing requirement)."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from herald.campaign.v1 import campaign_service_pb2, campaign_service_pb2_grpc, push_message_pb2
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


async def test_a_transactional_push_is_one_trace_across_services_queue_and_provider(
    redis, start_services, sandbox
):
    servers = await start_services(REGISTRATION, IDENTITY, DELIVERY, CAMPAIGN)
    exporters = {}
    for name, server in servers.items():
        exporters[name] = InMemorySpanExporter()
        server.runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(exporters[name]))
    channels = {n: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for n, s in servers.items()}
    try:
        identity = identity_service_pb2_grpc.IdentityServiceStub(channels["identity"])
        created = await identity.CreateApp(
            identity_service_pb2.CreateAppRequest(
                app_id=APP, app=app_pb2.App(display_name="Shop"), request_id=str(uuid.uuid4())
            )
        )
        await identity.UpsertUser(
            identity_service_pb2.UpsertUserRequest(
                user=user_pb2.User(external_id="alice", attributes={"first_name": "Alice"})
            )
        )
        await delivery_service_pb2_grpc.DeliveryServiceStub(channels["delivery"]).PutCredentials(
            delivery_service_pb2.PutCredentialsRequest(
                credentials=apns_credentials(sandbox, app_id=APP)
            )
        )
        token = new_device_token()
        await registration_service_pb2_grpc.RegistrationServiceStub(
            channels["registration"]
        ).RegisterDevice(
            registration_service_pb2.RegisterDeviceRequest(
                app_id=APP,
                device_id="phone",
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
        for _ in range(200):
            if sandbox.received("apns", token=token, status=200):
                break
            await asyncio.sleep(0.05)
        received = sandbox.received("apns", token=token, status=200)
        assert len(received) == 1
        await asyncio.sleep(0.3)  # the worker ends its attempt span after recording it
    finally:
        for channel in channels.values():
            await channel.close(None)

    (root,) = [
        s
        for s in exporters["campaign"].get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name.endswith("/SendToUsers")
    ]
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
