"""The gRPC edge of the Campaign service: proto in, domain call, proto out.

RPCs not overridden here answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET) until issue #6
brings them; see services/core/pending.py.
"""

from __future__ import annotations

from herald.campaign.v1 import campaign_service_pb2, campaign_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime

ISSUE = "issue #6"


class CampaignServicer(campaign_service_pb2_grpc.CampaignServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        fill_pending(
            self,
            campaign_service_pb2_grpc.CampaignServiceServicer,
            campaign_service_pb2.DESCRIPTOR.services_by_name["CampaignService"],
            ISSUE,
        )
