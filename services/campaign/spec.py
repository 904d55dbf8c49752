"""How the Campaign service plugs into the shared server bootstrap."""

from __future__ import annotations

from herald.campaign.v1 import campaign_service_pb2_grpc
from services.campaign.servicer import CampaignServicer
from services.core.server import Runtime, ServiceSpec


async def build(runtime: Runtime) -> CampaignServicer:
    # The RPCs a later issue brings are filled in by fill_pending at run time.
    return CampaignServicer(runtime)  # type: ignore[abstract]


SPEC = ServiceSpec(
    name="campaign",
    full_name="herald.campaign.v1.CampaignService",
    add_to_server=campaign_service_pb2_grpc.add_CampaignServiceServicer_to_server,
    build_servicer=build,
)
