"""The gRPC edge of the Delivery service: proto in, domain call, proto out.

RPCs not overridden here answer UNIMPLEMENTED (NOT_IMPLEMENTED_YET) until issue #5
brings them; see services/core/pending.py.
"""

from __future__ import annotations

from herald.delivery.v1 import delivery_service_pb2, delivery_service_pb2_grpc
from services.core.pending import fill_pending
from services.core.server import Runtime

ISSUE = "issue #5"


class DeliveryServicer(delivery_service_pb2_grpc.DeliveryServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        fill_pending(
            self,
            delivery_service_pb2_grpc.DeliveryServiceServicer,
            delivery_service_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
            ISSUE,
        )
