"""How the Delivery service plugs into the shared server bootstrap."""

from __future__ import annotations

from herald.delivery.v1 import delivery_service_pb2_grpc
from services.core.server import Runtime, ServiceSpec
from services.delivery.servicer import DeliveryServicer


async def build(runtime: Runtime) -> DeliveryServicer:
    # The RPCs a later issue brings are filled in by fill_pending at run time.
    return DeliveryServicer(runtime)  # type: ignore[abstract]


SPEC = ServiceSpec(
    name="delivery",
    full_name="herald.delivery.v1.DeliveryService",
    add_to_server=delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server,
    build_servicer=build,
)
