"""How the Delivery service plugs into the shared server bootstrap."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from herald.delivery.v1 import delivery_service_pb2_grpc
from services.core.server import Runtime, ServiceSpec
from services.delivery.options import DeliveryOptions
from services.delivery.servicer import DeliveryServicer


def builder(
    options: DeliveryOptions | None = None,
) -> Callable[[Runtime], Awaitable[DeliveryServicer]]:
    """A build_servicer with these queue options (default: read from HERALD_DELIVERY_*)."""

    async def build(runtime: Runtime) -> DeliveryServicer:
        servicer = DeliveryServicer(runtime, options=options or DeliveryOptions.from_env())
        await servicer.start()  # the queue workers run as long as the servicer
        return servicer

    return build


def spec_with(options: DeliveryOptions) -> ServiceSpec:
    """The Delivery service with explicit queue options (tests, benchmarks)."""
    return ServiceSpec(
        name="delivery",
        full_name="herald.delivery.v1.DeliveryService",
        add_to_server=delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server,
        build_servicer=builder(options),
    )


SPEC = ServiceSpec(
    name="delivery",
    full_name="herald.delivery.v1.DeliveryService",
    add_to_server=delivery_service_pb2_grpc.add_DeliveryServiceServicer_to_server,
    build_servicer=builder(),
)
