"""How the Identity service plugs into the shared server bootstrap."""

from __future__ import annotations

from herald.identity.v1 import identity_service_pb2_grpc
from services.core.server import Runtime, ServiceSpec
from services.identity.servicer import IdentityServicer


async def build(runtime: Runtime) -> IdentityServicer:
    return IdentityServicer(runtime)


SPEC = ServiceSpec(
    name="identity",
    full_name="herald.identity.v1.IdentityService",
    add_to_server=identity_service_pb2_grpc.add_IdentityServiceServicer_to_server,
    build_servicer=build,
)
