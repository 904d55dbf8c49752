"""How the Campaign service plugs into the shared server bootstrap."""

from __future__ import annotations

from herald.campaign.v1 import campaign_service_pb2_grpc
from services.campaign.servicer import CampaignServicer
from services.core.server import Runtime, ServiceSpec


async def build(runtime: Runtime) -> CampaignServicer:
    servicer = CampaignServicer(runtime)
    # The scheduler and the outcome consumer run beside the RPCs in every process;
    # Redis leases decide which process works on what.
    servicer.start()
    return servicer


SPEC = ServiceSpec(
    name="campaign",
    full_name="herald.campaign.v1.CampaignService",
    add_to_server=campaign_service_pb2_grpc.add_CampaignServiceServicer_to_server,
    build_servicer=build,
)
