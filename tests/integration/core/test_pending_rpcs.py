"""RPCs a later issue brings answer UNIMPLEMENTED plainly; nothing pretends to work."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from herald.campaign.v1 import campaign_service_pb2, campaign_service_pb2_grpc
from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from services.campaign.spec import SPEC as CAMPAIGN
from services.core.status import parse_error
from services.delivery.spec import SPEC as DELIVERY
from services.identity.spec import SPEC as IDENTITY
from services.registration.spec import SPEC as REGISTRATION


@pytest.mark.parametrize(
    ("spec", "stub", "rpc", "request_message", "issue"),
    [
        (
            CAMPAIGN,
            campaign_service_pb2_grpc.CampaignServiceStub,
            "LaunchCampaign",
            campaign_service_pb2.LaunchCampaignRequest(campaign_id="c1"),
            "issue #6",
        ),
        (
            DELIVERY,
            delivery_service_pb2_grpc.DeliveryServiceStub,
            "GetNotification",
            delivery_service_pb2.GetNotificationRequest(notification_id="n1"),
            "issue #5",
        ),
    ],
)
async def test_a_pending_unary_rpc_names_itself_and_its_issue(
    start_service, spec, stub, rpc, request_message, issue
):
    server = await start_service(spec)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=spec.full_name)
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub(channel), rpc)(request_message)
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.UNIMPLEMENTED
    assert details.reason == "NOT_IMPLEMENTED_YET"
    assert details.metadata == {"rpc": f"{spec.full_name}/{rpc}", "issue": issue}
    assert f"{spec.full_name}/{rpc} is not implemented yet" in details.message


async def test_a_pending_streaming_rpc_fails_before_sending_anything(start_service):
    server = await start_service(CAMPAIGN)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = campaign_service_pb2_grpc.CampaignServiceStub(channel)
        received = []

        async def watch() -> None:
            request = campaign_service_pb2.WatchCampaignRequest(campaign_id="c1")
            async for update in stub.WatchCampaign(request):
                received.append(update)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watch()
    assert received == []
    assert parse_error(caught.value).reason == "NOT_IMPLEMENTED_YET"


async def test_services_started_together_find_each_other(start_services):
    servers = await start_services(REGISTRATION, IDENTITY)
    registration = servers["registration"].runtime
    assert registration.settings.identity_address == f"127.0.0.1:{servers['identity'].port}"
    health = health_pb2_grpc.HealthStub(registration.channel("identity"))
    answer = await health.Check(health_pb2.HealthCheckRequest(service=IDENTITY.full_name))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
