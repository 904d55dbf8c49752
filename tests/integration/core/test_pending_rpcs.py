"""RPCs an issue has not brought yet answer UNIMPLEMENTED plainly; nothing pretends to work.

A bare servicer (the generated base class, nothing overridden) stands for a service
whose RPCs are all still to come, so these tests keep their meaning as services grow.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from herald.campaign.v1 import campaign_service_pb2, campaign_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime, ServiceSpec
from services.core.status import parse_error
from services.identity.spec import SPEC as IDENTITY
from services.registration.spec import SPEC as REGISTRATION

FULL_NAME = "herald.campaign.v1.CampaignService"


class BareCampaign(campaign_service_pb2_grpc.CampaignServiceServicer):
    def __init__(self) -> None:
        self.pending = fill_pending(
            self,
            campaign_service_pb2_grpc.CampaignServiceServicer,
            campaign_service_pb2.DESCRIPTOR.services_by_name["CampaignService"],
            "issue #6",
        )


async def _build(runtime: Runtime) -> BareCampaign:
    return BareCampaign()  # type: ignore[abstract]  # fill_pending supplies every RPC


BARE = ServiceSpec(
    name="campaign",
    full_name=FULL_NAME,
    add_to_server=campaign_service_pb2_grpc.add_CampaignServiceServicer_to_server,
    build_servicer=_build,
)


async def test_every_rpc_not_overridden_is_pending(start_service):
    server = await start_service(BARE)
    assert set(server.servicer.pending) == {
        m.name for m in campaign_service_pb2.DESCRIPTOR.services_by_name["CampaignService"].methods
    }


async def test_a_pending_unary_rpc_names_itself_and_its_issue(start_service):
    server = await start_service(BARE)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=FULL_NAME)
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = campaign_service_pb2_grpc.CampaignServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.LaunchCampaign(campaign_service_pb2.LaunchCampaignRequest(campaign_id="c1"))
    details = parse_error(caught.value)
    assert details.code == grpc.StatusCode.UNIMPLEMENTED
    assert details.reason == "NOT_IMPLEMENTED_YET"
    assert details.metadata == {"rpc": f"{FULL_NAME}/LaunchCampaign", "issue": "issue #6"}
    assert f"{FULL_NAME}/LaunchCampaign is not implemented yet" in details.message


async def test_a_pending_streaming_rpc_fails_before_sending_anything(start_service):
    server = await start_service(BARE)
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
